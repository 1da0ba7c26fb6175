package imageref

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	const dig = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		in   string
		want Ref
	}{
		{"nginx", Ref{Registry: "index.docker.io", Repository: "library/nginx"}},
		{"nginx:1.17.1", Ref{Registry: "index.docker.io", Repository: "library/nginx", Tag: "1.17.1"}},
		{"docker.io/library/nginx:latest", Ref{Registry: "index.docker.io", Repository: "library/nginx", Tag: "latest"}},
		{"index.docker.io/bitnami/redis:7", Ref{Registry: "index.docker.io", Repository: "bitnami/redis", Tag: "7"}},
		{"localhost:5000/app", Ref{Registry: "localhost:5000", Repository: "app"}},
		{"localhost:5000/app:v1", Ref{Registry: "localhost:5000", Repository: "app", Tag: "v1"}},
		{"127.0.0.1:5000/team/app@" + dig, Ref{Registry: "127.0.0.1:5000", Repository: "team/app", Digest: dig}},
		{"nginx:1.25@" + dig, Ref{Registry: "index.docker.io", Repository: "library/nginx", Tag: "1.25", Digest: dig}},
		{"registry.corp.evil.io/app:1", Ref{Registry: "registry.corp.evil.io", Repository: "app", Tag: "1"}},
		{"evil.io/registry.corp/app:1", Ref{Registry: "evil.io", Repository: "registry.corp/app", Tag: "1"}},
		// One host with and without the default port, not "[[::1]]".
		{"[::1]/app", Ref{Registry: "[::1]", Repository: "app"}},
		{"[::1]:443/app", Ref{Registry: "[::1]", Repository: "app"}},
		{"[FE80::1]:5000/app", Ref{Registry: "[fe80::1]:5000", Repository: "app"}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			tc.want.Original = tc.in
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{"", " nginx", "nginx ", "ngi nx", "NGINX", "nginx:", "nginx@sha256:abc", "nginx:bad tag", "a//b", "héllo", "nginx@@sha256:x"} {
		t.Run(in, func(t *testing.T) {
			if got, err := Parse(in); err == nil {
				t.Errorf("Parse(%q) = %+v, want an error", in, got)
			}
		})
	}
}

func TestRefString(t *testing.T) {
	tests := map[string]string{
		"nginx":                "index.docker.io/library/nginx",
		"nginx:1.17.1":         "index.docker.io/library/nginx:1.17.1",
		"localhost:5000/a/b:c": "localhost:5000/a/b:c",
	}
	for in, want := range tests {
		r, err := Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.String(); got != want {
			t.Errorf("Parse(%q).String() = %q, want %q", in, got, want)
		}
		ref, err := r.Reference()
		if err != nil {
			t.Fatal(err)
		}
		if r.Tag == "" && ref.Identifier() != "latest" {
			t.Errorf("Reference of untagged %q fetches %q, want latest", in, ref.Identifier())
		}
	}
}

func TestRepoPattern(t *testing.T) {
	tests := []struct {
		pattern string
		image   string
		want    bool
	}{
		{"nginx", "nginx:1.17.1", true},
		{"nginx", "docker.io/library/nginx", true},
		{"docker.io/library/nginx", "nginx", true},
		{"index.docker.io/library/*", "nginx", true},
		{"nginx", "bitnami/nginx", false},
		{"registry.corp/**", "registry.corp/app:1", true},
		{"registry.corp/**", "registry.corp/team/app/sub:1", true},
		{"registry.corp/**", "registry.corp.evil.io/app:1", false},
		{"registry.corp/**", "evil.io/registry.corp/app:1", false},
		{"registry.corp/**", "registry.corp:5000/app:1", false},
		{"registry.corp/team/*", "registry.corp/team/app", true},
		{"registry.corp/team/*", "registry.corp/team/app/sub", false},
		{"registry.corp/team/*", "registry.corp/teamx/app", false},
		{"registry.corp/team/**", "registry.corp/team-evil/app", false},
		{"registry.corp/**/app", "registry.corp/a/b/app", true},
		{"registry.corp/**/app", "registry.corp/app", true},
		{"Registry.Corp/app", "registry.corp/app", true},
		{"localhost:5000/**", "localhost:5000/x/y", true},
		{"**", "nginx", true},
		{"**", "quay.io/x", true},
		{"*/**", "quay.io/x", true},
		{"*/team/*", "quay.io/team/x", true},
		{"*/team/*", "quay.io/other/x", false},
		{"**/app", "quay.io/a/b/app", true},
	}
	for _, tc := range tests {
		t.Run(tc.pattern+" ~ "+tc.image, func(t *testing.T) {
			p, err := ParseRepoPattern(tc.pattern)
			if err != nil {
				t.Fatalf("ParseRepoPattern(%q): %v", tc.pattern, err)
			}
			r, err := Parse(tc.image)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.image, err)
			}
			if got := p.Match(r); got != tc.want {
				t.Errorf("%q (%s) matching %q (%s) = %v, want %v", tc.pattern, p, tc.image, r.Repo(), got, tc.want)
			}
		})
	}
}

func TestRepoPatternRejects(t *testing.T) {
	for _, in := range []string{"", "registry.corp", "nginx:1.0", "nginx@sha256:x", "a//b", "registry.corp/[", "a/b:c"} {
		t.Run(in, func(t *testing.T) {
			if p, err := ParseRepoPattern(in); err == nil {
				t.Errorf("ParseRepoPattern(%q) = %v, want an error", in, p)
			}
		})
	}
}

func TestHostPattern(t *testing.T) {
	tests := []struct {
		pattern, host string
		want          bool
	}{
		{"registry.corp", "registry.corp", true},
		{"registry.corp", "registry.corp.evil.io", false},
		{"registry.corp", "evil.registry.corp", false},
		{"*.corp.example", "a.corp.example", true},
		{"*.corp.example", "corp.example", false},
		{"docker.io", "index.docker.io", true},
		{"registry.corp", "registry.corp:5000", false},
		{"127.0.0.1:*", "127.0.0.1:5000", true},
	}
	for _, tc := range tests {
		t.Run(tc.pattern+" ~ "+tc.host, func(t *testing.T) {
			p, err := ParseHostPattern(tc.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Match(tc.host); got != tc.want {
				t.Errorf("%q matching %q = %v, want %v", tc.pattern, tc.host, got, tc.want)
			}
		})
	}
	for _, bad := range []string{"", "registry.corp/app", "[a"} {
		if _, err := ParseHostPattern(bad); err == nil {
			t.Errorf("ParseHostPattern(%q) succeeded, want an error", bad)
		}
	}
}

func TestCache(t *testing.T) {
	t.Parallel()
	c := NewCache(3)
	for _, s := range []string{"nginx", "nginx", "registry.corp:5000/team/app:1.2", "nginx", "busybox@sha256:" + strings.Repeat("ab", 32)} {
		want, err := Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Parse(s)
		if err != nil {
			t.Fatalf("Cache.Parse(%q): %v", s, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Cache.Parse(%q) (-want +got):\n%s", s, diff)
		}
	}
	for _, s := range []string{"", "UPPER/case", "a//b", "nginx:"} {
		_, want := Parse(s)
		for range 2 { // a remembered error would come back on the second call
			if _, err := c.Parse(s); err == nil || err.Error() != want.Error() {
				t.Errorf("Cache.Parse(%q) = %v, want %v", s, err, want)
			}
		}
	}
	for i := range 10 {
		if _, err := c.Parse(fmt.Sprintf("app%d", i)); err != nil {
			t.Fatal(err)
		}
		if n := len(c.refs); n > 3 {
			t.Fatalf("after %d new names the cache holds %d references, want at most 3", i+1, n)
		}
	}
}

// TestOneIdentityPerRegistry: every spelling the runtime or DNS treats as
// one registry matches the same patterns, and other registries do not.
func TestOneIdentityPerRegistry(t *testing.T) {
	tests := []struct {
		pattern string
		images  []string // each must match
		others  []string // none may match
	}{
		{"docker.io",
			[]string{"nginx", "docker.io/library/nginx", "index.docker.io/library/nginx", "registry-1.docker.io/library/nginx",
				"registry.hub.docker.com/library/nginx", "DOCKER.IO/library/nginx", "Docker.io/library/nginx",
				"docker.io:443/library/nginx", "index.docker.io:443/library/nginx"},
			[]string{"docker.io:5000/library/nginx", "docker.io.evil.example/library/nginx", "quay.io/library/nginx"}},
		{"registry.corp",
			[]string{"registry.corp/app", "REGISTRY.corp/app", "registry.corp:443/app"},
			[]string{"registry.corp:5000/app", "registry.corp.evil.io/app", "evil.io/registry.corp/app"}},
		{"registry.corp:443", []string{"registry.corp/app", "registry.corp:443/app"}, []string{"registry.corp:8443/app"}},
		{"[::1]:5000", []string{"[::1]:5000/app"}, []string{"[::2]:5000/app", "[::1]:5001/app"}},
		{"[fd00::*]:5000", []string{"[fd00::7]:5000/app"}, []string{"[fd01::7]:5000/app"}},
	}
	for _, tc := range tests {
		hp, err := ParseHostPattern(tc.pattern)
		if err != nil {
			t.Fatalf("ParseHostPattern(%q): %v", tc.pattern, err)
		}
		rp, err := ParseRepoPattern(tc.pattern + "/**")
		if err != nil {
			t.Fatalf("ParseRepoPattern(%q): %v", tc.pattern+"/**", err)
		}
		for _, img := range append(append([]string{}, tc.images...), tc.others...) {
			want := slices.Contains(tc.images, img)
			t.Run(tc.pattern+" ~ "+img, func(t *testing.T) {
				r, err := Parse(img)
				if err != nil {
					t.Fatal(err)
				}
				if got := hp.Match(r.Registry); got != want {
					t.Errorf("host pattern %q matches %q (registry %q): %v, want %v", tc.pattern, img, r.Registry, got, want)
				}
				if got := rp.Match(r); got != want {
					t.Errorf("repository pattern %q matches %q: %v, want %v", tc.pattern+"/**", img, got, want)
				}
			})
		}
	}
}

// TestKubeletGrammar refuses what the kubelet cannot parse, and what the
// runtime cannot pull by digest.
func TestKubeletGrammar(t *testing.T) {
	for _, in := range []string{
		"registry.corp/APP:1",
		"docker.io./library/nginx",
		"registry.corp/app@sha1:" + strings.Repeat("a", 40),
		"registry.corp/app@md5:" + strings.Repeat("a", 32),
		"registry.corp/app@blake3:" + strings.Repeat("a", 64),
		"registry.corp/app@sha256:" + strings.Repeat("A", 64),
		"registry.corp/app:" + strings.Repeat("t", 129),
		"-registry.corp/app",
		"registry-1.docker.io/nginx",
		"doCker.io/0",
	} {
		t.Run(in, func(t *testing.T) {
			if r, err := Parse(in); err == nil {
				t.Errorf("Parse(%q) = %+v, want it refused", in, r)
			}
		})
	}
	for _, in := range []string{"registry.corp/app@sha384:" + strings.Repeat("a", 96), "registry.corp/app@sha512:" + strings.Repeat("a", 128), "registry.corp/app:V1.0_rc"} {
		if _, err := Parse(in); err != nil {
			t.Errorf("Parse(%q): %v, want it accepted (the runtime pulls it)", in, err)
		}
	}
}
