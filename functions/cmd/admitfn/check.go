package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/admitfn/admitfn/functions/credprovider"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/pullcreds"
	"github.com/admitfn/admitfn/functions/resolver"
	"github.com/admitfn/admitfn/functions/review"
)

func check(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("admitfn check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	policyFile := fs.String("policy", "", "policy file (default: the embedded policy)")
	namespace := fs.String("namespace", "default", "namespace the images would run in")
	timeout := fs.Duration("timeout", 30*time.Second, "how long registry lookups may take in all")
	dockerConfig := fs.String("docker-config", "", "a folder holding config.json: the node's registry credentials")
	credConfig := fs.String("image-credential-provider-config", "", "the kubelet's CredentialProviderConfig (a file or folder): its plugins give the node's registry credentials")
	credBinDir := fs.String("image-credential-provider-bin-dir", "", "the folder of the plugins --image-credential-provider-config names")
	var pullSecrets []string
	fs.Func("pull-secret", "a pull Secret manifest (kubernetes.io/dockerconfigjson), tried before --docker-config as the kubelet tries a pod's; repeatable", func(f string) error {
		pullSecrets = append(pullSecrets, f)
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: admitfn check [--policy FILE] [--namespace NS] [--pull-secret FILE]... [--docker-config DIR]\n"+
			"                     [--image-credential-provider-config FILE --image-credential-provider-bin-dir DIR] IMAGE...")
		fmt.Fprintln(stderr, "Prints one line per image; exits 0 if all are allowed, 1 if any is denied, 2 on bad usage or policy.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "admitfn check: name at least one image")
		fs.Usage()
		return 2
	}
	p, err := policy.Load(*policyFile)
	if err != nil {
		fmt.Fprintf(stderr, "admitfn check: %v\n", err)
		return 2
	}
	opts := []resolver.Option{resolver.WithUserAgent("admitfn/" + version)}
	var secrets pullcreds.Keyrings
	if *credConfig != "" {
		providers, err := credprovider.Load(*credConfig, *credBinDir, credprovider.WithFailureLog(func(provider, repo string, err error) {
			fmt.Fprintf(stderr, "admitfn check: credential provider %s for %s: %v\n", provider, repo, err)
		}))
		if err != nil {
			fmt.Fprintf(stderr, "admitfn check: --image-credential-provider-config: %v\n", err)
			return 2
		}
		opts = append(opts, resolver.WithNodeCredentials(providers))
	}
	if len(pullSecrets) > 0 || *dockerConfig != "" || *credConfig != "" {
		var node pullcreds.Keyrings
		secrets, node, err = checkKeyrings(pullSecrets, *dockerConfig)
		if err != nil {
			fmt.Fprintf(stderr, "admitfn check: %v\n", err)
			return 2
		}
		// The node's credentials are the resolver's own; the Secrets
		// are the pod's, tried first.
		opts = append(opts, resolver.WithKeychain(keychain{node}))
	}
	res, err := resolver.New(p.Registry, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "admitfn check: %v\n", err)
		return 2
	}
	rv := review.New(p, res)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if len(secrets) > 0 {
		ctx = resolver.WithCredentials(ctx, secrets)
	}
	code := 0
	for _, img := range fs.Args() {
		d := rv.Review(ctx, review.Budget{}, policy.Request{Namespace: *namespace, Images: []policy.Image{{Ref: img}}})
		fmt.Fprintln(stdout, checkLine(img, d))
		if !d.Allowed {
			code = 1
		}
	}
	return code
}

// checkLine is "RESULT IMAGE [DIGEST] [rule] problem; to pass, fix" for
// each violation.
func checkLine(img string, d policy.Decision) string {
	result := "allowed"
	switch {
	case !d.Allowed:
		result = "denied"
	case len(d.Warnings()) > 0:
		result = "warned"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-7s %s", result, img)
	if dig := d.Digests[img]; dig != "" {
		fmt.Fprintf(&b, " %s", dig)
	}
	for _, v := range d.Violations {
		fmt.Fprintf(&b, " [%s/%s] %s; to pass, %s.", v.Rule, v.Mode, v.Problem, v.Fix)
	}
	for _, f := range d.FailedOpen {
		fmt.Fprintf(&b, " [failed open] %s.", f)
	}
	return b.String()
}
