// Command admitfn runs admitfn's admission handlers (serve) and judges
// images from a CI pipeline with the same policy engine (check).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped at build time through -ldflags "-X main.version=...".
var version = "dev"

const usage = `admitfn: admission policy for Kubernetes images

Usage:
  admitfn serve [flags]            serve the admission endpoints
  admitfn check [flags] IMAGE...   judge images with a policy (exit 0 allowed, 1 denied, 2 bad usage)
  admitfn admission-config [flags] write the apiserver's AdmissionConfiguration and kubeconfig
  admitfn static-pod [flags]       write a static Pod serving ImageReviews on a control-plane node's loopback
  admitfn webhook-config [flags]   write the webhook registrations pointed at the validating Service
  admitfn vap [flags]              write the name-only rules as ValidatingAdmissionPolicies (no webhook call)
  admitfn version                  print the version

Run "admitfn COMMAND -h" for a command's flags.
`

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	go func() {
		// The cause says which signal: SIGTERM (an orchestrator) drains,
		// an interrupt (a person) stops at once.
		cancel(stopSignal{<-sigs})
		signal.Stop(sigs)
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// stopSignal is the cause of main's context ending.
type stopSignal struct{ os.Signal }

func (s stopSignal) Error() string { return "received " + s.String() }

// terminated reports whether ctx ended on SIGTERM.
func terminated(ctx context.Context) bool {
	s, ok := context.Cause(ctx).(stopSignal)
	return ok && s.Signal == syscall.SIGTERM
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "check":
		return check(ctx, args[1:], stdout, stderr)
	case "admission-config":
		return admissionConfig(ctx, args[1:], stdout, stderr)
	case "webhook-config":
		return webhookConfig(ctx, args[1:], stdout, stderr)
	case "static-pod":
		return staticPod(args[1:], stdout, stderr)
	case "vap":
		return validatingAdmissionPolicy(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "admitfn: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
