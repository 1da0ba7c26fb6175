package vap

import (
	"math/rand/v2"
	"path"
	"regexp"
	"testing"
)

// TestGlobRegexp holds the translation to path.Match on hand-picked globs
// and on random ones over a small alphabet that hits every construct.
func TestGlobRegexp(t *testing.T) {
	globs := []string{
		"*", "", "?", "a*", "*b", "a?c", "prod-*", "kube-*", "[a-c]x", "[^a-c]x", "[c-a]", "[^c-a]",
		`\*`, `a\?b`, `[\]]`, `[\-]`, `[!-0]`, `[^!-0]`, "[-]", "v1.*", "1.2[0-9]", "[日本]*", "*.*.*",
	}
	names := []string{"", "a", "b", "abc", "ab", "ax", "dx", "/", "a/b", "prod-1", "kube-system", "*", "?", "]", "-", "!", "0",
		"v1.2", "1.25", "a.b.c", "c", ".", "x"}
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = `ab*?[]^-\/.日`
	runes := []rune(alphabet)
	for len(globs) < 4000 {
		n := rng.IntN(7)
		g := make([]rune, n)
		for i := range g {
			g[i] = runes[rng.IntN(len(runes))]
		}
		globs = append(globs, string(g))
	}
	// Names are ASCII: what the engine matches globs against (namespaces,
	// tags, registry hosts, repository segments of valid references)
	// always is, and on other strings path.Match lets '*' stop inside a
	// multi-byte character ("*??" matches "日"), which RE2 never does.
	const ascii = `ab*?[]^-\/.`
	for len(names) < 300 {
		n := rng.IntN(5)
		s := make([]byte, n)
		for i := range s {
			s[i] = ascii[rng.IntN(len(ascii))]
		}
		names = append(names, string(s))
	}
	checked := 0
	for _, g := range globs {
		re, err := globRegexp(g)
		_, bad := path.Match(g, "")
		if (err != nil) != (bad != nil) {
			t.Fatalf("glob %q: error %v, path.Match says %v", g, err, bad)
		}
		if err != nil {
			continue
		}
		rx, err := regexp.Compile(re)
		if err != nil {
			t.Fatalf("glob %q: %q does not compile: %v", g, re, err)
		}
		for _, s := range names {
			want, _ := path.Match(g, s)
			// The engine never matches a glob against a string with a
			// '/'; the translation refuses those outright.
			if got := rx.MatchString(s); got != want && !containsSlash(s) {
				t.Errorf("glob %q (%s) on %q: got %t, path.Match %t", g, re, s, got, want)
			}
			checked++
		}
	}
	if checked < 100000 {
		t.Fatalf("only %d comparisons: the generator produced too few valid globs", checked)
	}
}

func containsSlash(s string) bool {
	for _, r := range s {
		if r == '/' {
			return true
		}
	}
	return false
}
