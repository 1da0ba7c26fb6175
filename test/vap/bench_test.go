package vap

import (
	"testing"

	"github.com/admitfn/admitfn/functions/policy"
)

// BenchmarkGeneratedPolicy is one evaluation of the default policy's
// generated enforce policy on a one-container pod, as the apiserver runs
// it on every pod create.
func BenchmarkGeneratedPolicy(b *testing.B) {
	_, compiled := generate(b, string(policy.DefaultYAML()))
	c := compiled[policy.Enforce]
	r := podRequest("default", []string{"nginx:1.17.1"}, nil)
	b.ReportAllocs()
	for b.Loop() {
		if denied, msg := c.verdict(b, r); denied {
			b.Fatal(msg)
		}
	}
}
