package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/admitfn/admitfn/functions/admissionconfig"
)

func admissionConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("admitfn admission-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o admissionconfig.Options
	fs.StringVar(&o.URL, "url", "", "the backend's URL (https), as `kn service describe image-policy -o url` prints it; /imagepolicy is added when it has no path")
	service := fs.String("service", "", "read the URL from this Knative Service's status.url instead of --url")
	namespace := fs.String("namespace", "admitfn", "namespace of --service")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig for reading --service (default: $KUBECONFIG, else ~/.kube/config)")
	kubeContext := fs.String("context", "", "kubeconfig context for reading --service (default: the current one)")
	fs.StringVar(&o.CAFile, "ca-file", "", "CA that signed the backend's serving certificate")
	fs.StringVar(&o.ClientCert, "client-cert", "", "client certificate the apiserver presents (for a backend with --client-ca)")
	fs.StringVar(&o.ClientKey, "client-key", "", "key of --client-cert")
	fs.BoolVar(&o.EmbedCerts, "embed-certs", false, "put the certificates into the kubeconfig instead of their paths")
	fs.IntVar(&o.AllowTTL, "allow-ttl", 50, "seconds the apiserver caches an allow (1-1800; 0 default, -1 off)")
	fs.IntVar(&o.DenyTTL, "deny-ttl", 50, "seconds the apiserver caches a deny (1-1800; 0 default, -1 off)")
	fs.IntVar(&o.RetryBackoff, "retry-backoff", 500, "milliseconds between retries (1-300000; 0 default, -1 off)")
	fs.BoolVar(&o.DefaultAllow, "default-allow", false, "admit pods when the backend cannot be reached (default: fail closed)")
	fs.StringVar(&o.TokenFile, "token-file", "", "absolute path of the caller token file the apiserver reads and sends as a bearer token (admitfn serve --token-dir holds the same token)")
	fs.StringVar(&o.WebhookStaticDir, "webhook-static-dir", "", "absolute path of the folder admitfn webhook-config --static-dir wrote: the webhook plugins load those registrations at start, and they cannot be deleted through the API")
	fs.StringVar(&o.VAPStaticDir, "vap-static-dir", "", "absolute path of the folder admitfn vap --static-dir wrote: the ValidatingAdmissionPolicy plugin loads those policies at start, and they cannot be deleted through the API")
	fs.StringVar(&o.WebhookURL, "webhook-url", "", "base URL of the validating/mutating webhooks (the validating Service): also configure the webhook plugins to send --token-file (and --client-cert) to that host")
	acceptLockout := fs.Bool("accept-lockout", false, "with --service: write a fail-closed configuration even though the Service can scale to zero, which can lock the cluster (see the error without it)")
	format := fs.String("format", "yaml", "AdmissionConfiguration format: yaml or json")
	out := fs.String("out", ".", "folder to write admission_config.{yaml,json} and kubeconfig.yaml to")
	fs.StringVar(&o.KubeconfigPath, "kubeconfig-path", "", "where the apiserver will read kubeconfig.yaml (default: the file written under --out)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: admitfn admission-config (--url https://HOST | --service NAME) [--webhook-url https://HOST] [--token-file PATH] [flags]")
		fmt.Fprintln(stderr, "Writes the AdmissionConfiguration and kubeconfig kube-apiserver needs to ask admitfn.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *format != "yaml" && *format != "json" {
		fmt.Fprintf(stderr, "admitfn admission-config: --format %q: use yaml or json\n", *format)
		return 2
	}
	switch {
	case *service != "" && o.URL != "":
		fmt.Fprintln(stderr, "admitfn admission-config: --url and --service exclude each other")
		return 2
	case *service != "":
		svc, err := knativeService(ctx, *kubeconfig, *kubeContext, *namespace, *service)
		if err != nil {
			fmt.Fprintf(stderr, "admitfn admission-config: --service: %v\n", err)
			return 1
		}
		if !o.DefaultAllow {
			if err := svc.FailClosedLockout(); err != nil {
				if !*acceptLockout {
					fmt.Fprintf(stderr, "admitfn admission-config: --service: %v\n", err)
					return 1
				}
				fmt.Fprintf(stderr, "warning: --accept-lockout: %v\n", err)
			} else {
				fmt.Fprintln(stderr, svc.IngressPathWarning())
			}
		}
		o.URL = svc.URL
	case *acceptLockout:
		fmt.Fprintln(stderr, "admitfn admission-config: --accept-lockout goes with --service")
		return 2
	}
	if o.URL != "" {
		o.URL = admissionconfig.EndpointURL(o.URL)
	}
	kubeconfigFile := filepath.Join(*out, "kubeconfig.yaml")
	webhookKubeconfigFile := filepath.Join(*out, "webhook_kubeconfig.yaml")
	for _, f := range []struct {
		set  *string
		file string
		need bool
	}{{&o.KubeconfigPath, kubeconfigFile, o.URL != ""}, {&o.WebhookKubeconfigPath, webhookKubeconfigFile, o.WebhookURL != ""}} {
		if *f.set != "" || !f.need {
			continue
		}
		abs, err := filepath.Abs(f.file)
		if err != nil {
			fmt.Fprintf(stderr, "admitfn admission-config: %v\n", err)
			return 2
		}
		*f.set = abs
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintf(stderr, "admitfn admission-config: %v\n", err)
		return 2
	}
	ac, err := o.AdmissionConfiguration(*format == "json")
	if err != nil {
		fmt.Fprintf(stderr, "admitfn admission-config: %v\n", err)
		return 1
	}
	type output struct {
		path string
		data []byte
		mode os.FileMode
	}
	acFile := filepath.Join(*out, "admission_config."+*format)
	files := []output{{acFile, ac, 0o644}}
	if o.URL != "" {
		kc, err := o.Kubeconfig()
		if err != nil {
			fmt.Fprintf(stderr, "admitfn admission-config: %v\n", err)
			return 2
		}
		files = append(files, output{kubeconfigFile, kc, 0o600})
	}
	if o.WebhookURL != "" {
		wkc, err := o.WebhookKubeconfig()
		if err != nil {
			fmt.Fprintf(stderr, "admitfn admission-config: %v\n", err)
			return 2
		}
		files = append(files, output{webhookKubeconfigFile, wkc, 0o600})
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintf(stderr, "admitfn admission-config: %v\n", err)
		return 1
	}
	var written []string
	for _, f := range files {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			fmt.Fprintf(stderr, "admitfn admission-config: %v\n", err)
			return 1
		}
		written = append(written, f.path)
	}
	plugins := "NodeRestriction"
	if o.URL != "" {
		plugins += ",ImagePolicyWebhook"
	}
	fmt.Fprintf(stdout, "wrote %s", strings.Join(written, ", "))
	if o.URL != "" {
		fmt.Fprintf(stdout, " for %s", o.URL)
	}
	if o.WebhookURL != "" {
		fmt.Fprintf(stdout, " (webhooks at %s)", o.WebhookURL)
	}
	fmt.Fprintf(stdout, "\nstart kube-apiserver with:\n  --enable-admission-plugins=%s\n  --admission-control-config-file=%s\n", plugins, acFile)
	return 0
}

// knativeService reads a Knative Service through the user's kubeconfig,
// with kubectl's rules for finding it.
func knativeService(ctx context.Context, kubeconfig, kubeContext, namespace, name string) (admissionconfig.Service, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		return admissionconfig.Service{}, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "admitfn/" + version
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return admissionconfig.Service{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return admissionconfig.ReadService(ctx, client, namespace, name)
}
