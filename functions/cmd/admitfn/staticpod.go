package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/admitfn/admitfn/functions/staticpod"
)

func staticPod(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("admitfn static-pod", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := staticpod.Defaults()
	fs.StringVar(&o.Image, "image", "", "admitfn's image by digest (IMAGE@sha256:..., as ko build prints it)")
	fs.IntVar(&o.Port, "port", o.Port, "loopback port to serve HTTPS on")
	fs.StringVar(&o.HostDir, "host-dir", o.HostDir, "folder on the node holding the policy, the serving pair and the client CA (mounted read-only)")
	fs.StringVar(&o.PolicyFile, "policy-file", o.PolicyFile, "policy file name in --host-dir (empty: the embedded policy)")
	fs.StringVar(&o.TLSCert, "tls-cert-file", o.TLSCert, "serving certificate file name in --host-dir (with an IP SAN 127.0.0.1)")
	fs.StringVar(&o.TLSKey, "tls-key-file", o.TLSKey, "serving key file name in --host-dir (readable by uid 65532)")
	fs.StringVar(&o.ClientCA, "client-ca-file", "", "CA file name in --host-dir that must have signed the apiserver's client certificate (empty: no client certificate asked)")
	handlers := fs.String("handlers", strings.Join(o.Handlers, ","), "endpoints to mount")
	fs.StringVar(&o.Name, "name", o.Name, "pod name")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "pod namespace")
	out := fs.String("out", "", "file to write (default: standard output), e.g. /etc/kubernetes/manifests/admitfn-image-policy.yaml")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: admitfn static-pod --image IMAGE@sha256:... [flags]")
		fmt.Fprintln(stderr, "Writes a static Pod that serves ImageReviews on the control-plane node's loopback, for a fail-closed ImagePolicyWebhook.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "admitfn static-pod: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	o.Handlers = strings.Split(*handlers, ",")
	if err := o.Validate(); err != nil {
		fmt.Fprintf(stderr, "admitfn static-pod: %v\n", err)
		return 2
	}
	manifest, err := o.YAML()
	if err != nil {
		fmt.Fprintf(stderr, "admitfn static-pod: %v\n", err)
		return 1
	}
	if *out == "" {
		stdout.Write(manifest)
	} else if err := os.WriteFile(*out, manifest, 0o644); err != nil {
		fmt.Fprintf(stderr, "admitfn static-pod: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "then point the plugin at it (CA.crt: what signed %s):\n  admitfn admission-config --url %s --ca-file CA.crt", o.TLSCert, o.URL())
	if o.ClientCA != "" {
		fmt.Fprintf(stderr, " --client-cert APISERVER.crt --client-key APISERVER.key  (a pair %s signed)", o.ClientCA)
	}
	fmt.Fprintln(stderr)
	return 0
}
