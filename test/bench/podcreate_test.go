package main

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseBenchLines(t *testing.T) {
	out := bytes.NewBufferString(`goos: linux
BenchmarkPodCreate-2 	 1000	  9000 ns/op	 1.40 admitfn/without	 2.50 ms/pod-without-webhook
BenchmarkPodCreateImagePolicy-2 starting control plane
BenchmarkPodCreateImagePolicy-2 	 1000	 17000 ns/op	 1.30 asked/without
PASS
`)
	got, err := parseBenchLines(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]float64{
		"BenchmarkPodCreate":            {"ns/op": 9000, "admitfn/without": 1.4, "ms/pod-without-webhook": 2.5},
		"BenchmarkPodCreateImagePolicy": {"ns/op": 17000, "asked/without": 1.3},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseBenchLines (-want +got):\n%s", diff)
	}

	if _, err := parseBenchLines(bytes.NewBufferString("BenchmarkX-2 10 fast ns/op\n")); err == nil {
		t.Error("a value that is not a number: no error")
	}
}
