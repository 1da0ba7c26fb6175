//go:build tools

// Package kyverno pins Kyverno's admission controller for make bench's
// side-by-side comparison (test/e2e BenchmarkKyvernoSideBySide). It is a
// module of its own: Kyverno brings hundreds of modules admitfn does not
// use, and one replace of its own (below in go.mod).
package kyverno

import _ "github.com/kyverno/kyverno/cmd/kyverno"
