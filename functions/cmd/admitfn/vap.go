package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/admitfn/admitfn/config"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/vap"
	"github.com/admitfn/admitfn/functions/webhookconfig"
)

func validatingAdmissionPolicy(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("admitfn vap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	policyFile := fs.String("policy", "", "policy file (default: the embedded policy)")
	prefix := fs.String("prefix", "admitfn", "start of every object's name")
	out := fs.String("out", "", "file to write (default: standard output)")
	staticDir := fs.String("static-dir", "", "write the objects for kube-apiserver's staticManifestsDir into this folder instead (names end in "+webhookconfig.StaticSuffix+"; wire it with admitfn admission-config --vap-static-dir)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: admitfn vap [--policy FILE] [flags]")
		fmt.Fprintf(stderr, "Writes the policy's name-only rules as ValidatingAdmissionPolicies and bindings (kube-apiserver %s or later),\nand says on standard error which rules stay with the webhook and why.\n", vap.MinKubernetes)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "admitfn vap: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	doc, err := policy.LoadDocument(*policyFile)
	if err != nil {
		fmt.Fprintf(stderr, "admitfn vap: %v\n", err)
		return 2
	}
	if *staticDir != "" && *out != "" {
		fmt.Fprintln(stderr, "admitfn vap: --out and --static-dir exclude each other")
		return 2
	}
	// The policies leave out what the webhook registration leaves out:
	// the system namespaces (no lockout), the apiserver's own requests.
	selector, conditions, err := webhookconfig.WorkloadScope(config.Webhooks)
	if err != nil {
		fmt.Fprintf(stderr, "admitfn vap: %v\n", err)
		return 1
	}
	o, err := vap.Generate(doc, vap.Options{Prefix: *prefix, Static: *staticDir != "", NamespaceSelector: selector, MatchConditions: conditions})
	if err != nil {
		fmt.Fprintf(stderr, "admitfn vap: %v\n", err)
		return 2
	}
	manifest, err := o.YAML()
	if err != nil {
		fmt.Fprintf(stderr, "admitfn vap: %v\n", err)
		return 1
	}
	if *staticDir != "" {
		if err := os.MkdirAll(*staticDir, 0o755); err != nil {
			fmt.Fprintf(stderr, "admitfn vap: %v\n", err)
			return 1
		}
		*out = filepath.Join(*staticDir, *prefix+"-validating-admission-policies.yaml")
	}
	if *out == "" {
		stdout.Write(manifest)
	} else if err := os.WriteFile(*out, manifest, 0o644); err != nil {
		fmt.Fprintf(stderr, "admitfn vap: %v\n", err)
		return 1
	}
	fmt.Fprint(stderr, o.Summary())
	if *staticDir != "" {
		fmt.Fprintf(stderr, "wrote %s; the apiserver loads it with admitfn admission-config --vap-static-dir %s (an absolute path on the control-plane node)\n", *out, *staticDir)
	}
	return 0
}
