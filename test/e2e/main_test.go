//go:build e2e

// Package e2e runs admitfn against a real kube-apiserver and etcd on
// loopback: the apiserver is the client of admitfn's handlers over TLS, as
// in a cluster. Run it with `make e2e`, which builds the pinned control
// plane (test/tools) first.
package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/admitfn/admitfn/test/testbin"
)

// admitfnBin is the admitfn binary built for this run.
var admitfnBin string

func toolBin(name string) string {
	dir := os.Getenv("ADMITFN_TOOLS_BIN")
	if dir == "" {
		dir = filepath.Join("..", "tools", "bin")
	}
	abs, _ := filepath.Abs(filepath.Join(dir, name))
	return abs
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(floorEnv); spec != "" {
		fmt.Fprintln(os.Stderr, serveFloor(spec))
		os.Exit(1)
	}
	for _, tool := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(toolBin(tool)); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s not found at %s: run `make tools` (or `make e2e`), or set ADMITFN_TOOLS_BIN\n", tool, toolBin(tool))
			os.Exit(1)
		}
	}
	testbin.Run(m, &admitfnBin)
}
