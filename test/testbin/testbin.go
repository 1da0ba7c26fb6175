// Package testbin builds the admitfn binary for tests that run it as a
// process, the way users do.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Run builds admitfn into a temporary folder, stores its path in *bin, runs
// the tests and exits with their code. Call it from TestMain.
func Run(m *testing.M, bin *string) {
	dir, err := os.MkdirTemp("", "admitfn-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = filepath.Join(dir, "admitfn")
	build := exec.Command("go", "build", "-o", *bin, "github.com/admitfn/admitfn/functions/cmd/admitfn")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building admitfn:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
