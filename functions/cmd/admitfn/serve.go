package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/admitfn/admitfn/functions/devcert"
	"github.com/admitfn/admitfn/functions/imagepolicy"
	"github.com/admitfn/admitfn/functions/mutating"
	"github.com/admitfn/admitfn/functions/review"
	"github.com/admitfn/admitfn/functions/server"
	"github.com/admitfn/admitfn/functions/validating"
)

// endpoint is a handler --handlers can mount.
type endpoint struct {
	path string
	make func(*review.Reviewer) http.Handler
}

var endpoints = map[string]endpoint{
	"imagepolicy": {imagepolicy.Path, func(rv *review.Reviewer) http.Handler { return imagepolicy.New(rv) }},
	"validating":  {validating.Path, validating.New},
	"mutating":    {mutating.Path, mutating.New},
}

func endpointNames() string {
	var names []string
	for n := range endpoints {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

func defaultListen() string {
	if port := os.Getenv("PORT"); port != "" {
		return ":" + port
	}
	return ":8080"
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("admitfn serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := server.Config{}
	fs.StringVar(&cfg.Listen, "listen", defaultListen(), "address to listen on (default :$PORT, else :8080)")
	policyFile := fs.String("policy", "", "policy file (default: the embedded policy)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "serving certificate (PEM); with --tls-key, serve HTTPS")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "serving key (PEM)")
	fs.StringVar(&cfg.ClientCA, "client-ca", "", "CA bundle (PEM) that must have signed every client's certificate")
	handlers := fs.String("handlers", endpointNames(), "comma-separated endpoints to mount: "+endpointNames())
	devCerts := fs.String("dev-certs", "", "make a throwaway CA and a localhost serving certificate in this folder and serve HTTPS with them (for trying admitfn out)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "admitfn serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	p, err := loadPolicy(*policyFile)
	if err != nil {
		fmt.Fprintf(stderr, "admitfn serve: %v\n", err)
		return 2
	}
	rv, err := newReviewer(p)
	if err != nil {
		fmt.Fprintf(stderr, "admitfn serve: %v\n", err)
		return 2
	}
	cfg.Routes = map[string]http.Handler{}
	var paths []string
	for _, name := range strings.Split(*handlers, ",") {
		name = strings.TrimSpace(name)
		ep, ok := endpoints[name]
		if !ok {
			fmt.Fprintf(stderr, "admitfn serve: --handlers: unknown handler %q (known: %s)\n", name, endpointNames())
			return 2
		}
		cfg.Routes[ep.path] = ep.make(rv)
		paths = append(paths, ep.path)
	}
	caFile := ""
	if *devCerts != "" {
		if cfg.TLSCert != "" {
			fmt.Fprintln(stderr, "admitfn serve: --dev-certs and --tls-cert exclude each other")
			return 2
		}
		if caFile, cfg.TLSCert, cfg.TLSKey, err = makeDevCerts(*devCerts); err != nil {
			fmt.Fprintf(stderr, "admitfn serve: --dev-certs: %v\n", err)
			return 2
		}
	}
	srv, err := server.Start(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "admitfn serve: %v\n", err)
		return 2
	}
	fmt.Fprintf(stdout, "admitfn %s serving %s on %s with policy %q\n", version, strings.Join(paths, ", "), srv.URL(), p.Name)
	if caFile != "" {
		printApiserverHints(stdout, srv.URL(), caFile)
	}
	if err := srv.Wait(ctx); err != nil {
		fmt.Fprintf(stderr, "admitfn serve: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "admitfn stopped")
	return 0
}

func makeDevCerts(dir string) (caFile, certFile, keyFile string, err error) {
	ca, err := devcert.NewCA("admitfn-dev-ca")
	if err != nil {
		return "", "", "", err
	}
	pair, err := ca.Server("localhost", "127.0.0.1", "::1")
	if err != nil {
		return "", "", "", err
	}
	if certFile, keyFile, err = pair.Write(dir, "tls"); err != nil {
		return "", "", "", err
	}
	caFile = filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.PEM, 0o644); err != nil {
		return "", "", "", err
	}
	abs, err := filepath.Abs(caFile)
	if err != nil {
		return "", "", "", err
	}
	return abs, certFile, keyFile, nil
}

func printApiserverHints(w io.Writer, url, caFile string) {
	fmt.Fprintf(w, `
To let kube-apiserver ask it, enable the plugin and point its admission kubeconfig here:
  kube-apiserver --enable-admission-plugins=NodeRestriction,ImagePolicyWebhook \
                 --admission-control-config-file=admission_config.yaml

  # admission_config.yaml
  apiVersion: apiserver.config.k8s.io/v1
  kind: AdmissionConfiguration
  plugins:
  - name: ImagePolicyWebhook
    configuration:
      imagePolicy:
        kubeConfigFile: /etc/kubernetes/admitfn/kubeconfig.yaml
        allowTTL: 50
        denyTTL: 50
        retryBackoff: 500
        defaultAllow: false   # fail closed: no answer, no pod

  # /etc/kubernetes/admitfn/kubeconfig.yaml
  apiVersion: v1
  kind: Config
  clusters:
  - name: admitfn
    cluster:
      server: %[1]s/imagepolicy
      certificate-authority: %[2]s
  users:
  - name: kube-apiserver
  contexts:
  - name: admitfn
    context: {cluster: admitfn, user: kube-apiserver}
  current-context: admitfn

For ValidatingWebhookConfiguration / MutatingWebhookConfiguration (see config/500-webhooks.yaml):
  clientConfig.url: %[1]s/validate   (and %[1]s/mutate)
  clientConfig.caBundle: base64 of %[2]s

Or ask it yourself:
  curl --cacert %[2]s -H 'Content-Type: application/json' %[1]s/imagepolicy \
    -d '{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx"}],"namespace":"default"}}'
`, url, caFile)
}
