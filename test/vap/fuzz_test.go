package vap

import (
	"testing"
	"unicode/utf8"
)

// FuzzGeneratedPolicies holds the generated policies to the engine on
// any reference, in any of the namespaces the policies scope by: make
// fuzz runs it, and what it finds replays from testdata/fuzz.
func FuzzGeneratedPolicies(f *testing.F) {
	for i, ref := range references {
		f.Add(ref, uint8(i))
	}
	type generated struct {
		name string
		doc  string
	}
	var all []generated
	for _, name := range []string{"references-only", "every-field"} {
		all = append(all, generated{name, policies[name]})
	}
	p0, c0 := generate(f, all[0].doc)
	p1, c1 := generate(f, all[1].doc)
	f.Fuzz(func(t *testing.T, ref string, ns uint8) {
		// The apiserver hands CEL and a webhook the same JSON, which holds
		// only UTF-8: an invalid byte would reach the two sides here as
		// different strings.
		if !utf8.ValidString(ref) {
			t.Skip("not UTF-8")
		}
		r := podRequest(namespaces[int(ns)%len(namespaces)], []string{ref}, nil)
		compare(t, p0, c0, r)
		compare(t, p1, c1, r)
	})
}
