package imageref

import (
	"testing"

	"github.com/distribution/reference"
)

// FuzzParse checks that Parse never panics and that what it accepts is
// stable: the normalized form parses to the same reference.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"nginx", "nginx:1.17.1", "docker.io/library/nginx:latest", "localhost:5000/a/b:c",
		"registry.corp.evil.io/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "a//b", "", ":", "@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			return
		}
		// Differential against the kubelet's parser: whatever admitfn
		// accepts, the kubelet reads as the same repository, tag and
		// digest (the registry up to its canonical spelling).
		named, kerr := reference.ParseNormalizedNamed(s)
		if kerr != nil {
			t.Fatalf("Parse(%q) accepted what the kubelet refuses: %v", s, kerr)
		}
		if CanonicalHost(reference.Domain(named)) != r.Registry || reference.Path(named) != r.Repository {
			t.Fatalf("Parse(%q) = %s/%s, the kubelet reads %s", s, r.Registry, r.Repository, named)
		}
		if tagged, ok := named.(reference.Tagged); ok != (r.Tag != "") || (ok && tagged.Tag() != r.Tag) {
			t.Fatalf("Parse(%q) tag %q, the kubelet reads %s", s, r.Tag, named)
		}
		if d, ok := named.(reference.Digested); ok != (r.Digest != "") || (ok && d.Digest().String() != r.Digest) {
			t.Fatalf("Parse(%q) digest %q, the kubelet reads %s", s, r.Digest, named)
		}
		again, err := Parse(r.String())
		if err != nil {
			t.Fatalf("Parse(%q) gave %q, which does not parse: %v", s, r.String(), err)
		}
		if again.Repo() != r.Repo() || again.Tag != r.Tag || again.Digest != r.Digest {
			t.Fatalf("Parse(%q) = %+v, but its normal form %q parses to %+v", s, r, r.String(), again)
		}
	})
}

// FuzzRepoPattern checks that pattern parsing and matching never panic.
func FuzzRepoPattern(f *testing.F) {
	f.Add("registry.corp/**", "registry.corp/app:1")
	f.Add("*/team/*", "quay.io/team/x")
	f.Add("nginx", "nginx")
	f.Fuzz(func(t *testing.T, pattern, image string) {
		p, err := ParseRepoPattern(pattern)
		if err != nil {
			return
		}
		if r, err := Parse(image); err == nil {
			p.Match(r)
		}
	})
}
