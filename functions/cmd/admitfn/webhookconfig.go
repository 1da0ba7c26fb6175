package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/admitfn/admitfn/config"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/vap"
	"github.com/admitfn/admitfn/functions/webhookconfig"
)

func webhookConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("admitfn webhook-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o webhookconfig.Options
	fs.StringVar(&o.BaseURL, "url", "", "the validating Service's base URL (https), as `kn service describe validating -o url` prints it")
	service := fs.String("service", "", "read the URL from this Knative Service's status.url instead of --url")
	namespace := fs.String("namespace", "admitfn", "namespace of --service")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig for reading --service (default: $KUBECONFIG, else ~/.kube/config)")
	kubeContext := fs.String("context", "", "kubeconfig context for reading --service (default: the current one)")
	caFile := fs.String("ca-file", "", "CA (PEM) that signed the URL's certificate, put in caBundle; leave out when the apiserver trusts it already")
	fs.BoolVar(&o.Mutating, "mutating", false, "also write the mutating registration (for a policy with spec.mutation)")
	staticDir := fs.String("static-dir", "", "write the registrations for kube-apiserver's staticManifestsDir into this folder (validating/ and mutating/; names end in "+webhookconfig.StaticSuffix+"), for --url on the control-plane node's loopback (admitfn static-pod); wire it with admitfn admission-config --webhook-static-dir")
	withVAP := fs.String("with-vap", "", "policy file whose admitfn vap policies are in place: add a match condition so that the apiserver calls the webhook only where a rule that stays with it applies, and leave out the node webhook when the policies restrict kubelets (\"default\" for the embedded policy)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: admitfn webhook-config (--url https://HOST | --service NAME) [--ca-file F] [--mutating] | kubectl apply -f -")
		fmt.Fprintln(stderr, "Writes admitfn's webhook registrations (config/webhooks/) pointed at the Service.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "admitfn webhook-config: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	switch {
	case *service != "" && o.BaseURL != "":
		fmt.Fprintln(stderr, "admitfn webhook-config: --url and --service exclude each other")
		return 2
	case *service != "":
		svc, err := knativeService(ctx, *kubeconfig, *kubeContext, *namespace, *service)
		if err != nil {
			fmt.Fprintf(stderr, "admitfn webhook-config: --service: %v\n", err)
			return 1
		}
		o.BaseURL = svc.URL
	case o.BaseURL == "":
		fmt.Fprintln(stderr, "admitfn webhook-config: --url or --service is required")
		return 2
	}
	if *caFile != "" {
		b, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintf(stderr, "admitfn webhook-config: --ca-file: %v\n", err)
			return 2
		}
		o.CABundle = b
	}
	if *withVAP != "" {
		file := *withVAP
		if file == "default" {
			file = ""
		}
		doc, err := policy.LoadDocument(file)
		if err == nil {
			_, err = policy.Compile(doc)
		}
		if err == nil {
			o.MatchConditions, err = vap.WebhookConditions(doc)
			o.NoNodeWebhook = !vap.NodeWebhookNeeded(doc)
		}
		if err != nil {
			fmt.Fprintf(stderr, "admitfn webhook-config: --with-vap: %v\n", err)
			return 2
		}
	}
	if *staticDir != "" {
		written, err := webhookconfig.WriteStatic(config.Webhooks, o, *staticDir)
		if err != nil {
			fmt.Fprintf(stderr, "admitfn webhook-config: %v\n", err)
			return 2
		}
		for _, f := range written {
			fmt.Fprintf(stderr, "wrote %s\n", f)
		}
		fmt.Fprintf(stderr, "the apiserver loads them with admitfn admission-config --webhook-static-dir %s (an absolute path on the control-plane node)\n", *staticDir)
		return 0
	}
	out, err := webhookconfig.Render(config.Webhooks, o)
	if err != nil {
		fmt.Fprintf(stderr, "admitfn webhook-config: %v\n", err)
		return 2
	}
	stdout.Write(out)
	return 0
}
