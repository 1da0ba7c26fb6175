package vap

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/vap"
)

// TestGeneratedPoliciesOnRandomPolicies draws policies from the patterns
// where globs and normalization meet (host patterns with ports and
// Docker Hub's aliases, repository patterns with "**" and library/, tag
// and namespace globs with classes and escapes, every mode) and holds
// each one's generated policies to the engine on fuzzed references.
func TestGeneratedPoliciesOnRandomPolicies(t *testing.T) {
	rng := rand.New(rand.NewPCG(1302, 5793))
	pick := func(s []string) string { return s[rng.IntN(len(s))] }
	some := func(s []string) []string {
		var out []string
		for range rng.IntN(3) {
			out = append(out, pick(s))
		}
		return out
	}
	tagGlobs := []string{"latest", "v*", "*-rc*", "1.*", "[0-9]*", "[^v]*", "?", "*.x", `\*`, "[a-c-]*", "*dev", "1.2[0-9]"}
	hostGlobs := []string{"docker.io", "index.docker.io", "registry.corp", "*.corp", "registry.corp:5000", "localhost:5000", "[::1]", "*.gcr.io", "REGISTRY.CORP", "registry-1.docker.io", "*"}
	repoGlobs := []string{"nginx", "library/*", "**/debug", "registry.corp/**", "registry.corp/team/*", "*/proj/app", "*.gcr.io/**", "bitnami/*", "docker.io/**", "localhost:5000/**", "**"}
	nsGlobs := []string{"default", "team-*", "prod-?", "prod-*", "kube-*", "[a-m]*", "tmp-[0-9]"}
	modes := []string{"", "enforce", "warn", "audit"}
	hosts := []string{"", "", "docker.io/", "index.docker.io/", "registry-1.docker.io/", "registry.corp/", "registry.corp:5000/", "REGISTRY.corp/", "localhost:5000/", "[::1]/", "us.gcr.io/", "sub.registry.corp/"}
	paths := []string{"nginx", "library/nginx", "team/app", "team/debug", "proj/app", "bitnami/redis", "a/b/c/debug", "app"}
	tags := []string{"", ":latest", ":v1", ":1.2", ":1.25", ":2-rc1", ":3.x", ":dev", ":x", ":*"}
	digests := []string{"", "", "@" + dig}

	const nPolicies, nRefs = 40, 120
	compared, skipped, denied := 0, 0, 0
	for i := range nPolicies {
		var b strings.Builder
		fmt.Fprintf(&b, "apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: random-%d}\nspec:\n", i)
		if rng.IntN(3) == 0 {
			fmt.Fprintf(&b, "  exemptNamespaces: %s\n", yamlList(some(nsGlobs)))
		}
		b.WriteString("  rules:\n")
		for j := range 1 + rng.IntN(4) {
			fmt.Fprintf(&b, "  - name: r%d\n", j)
			if m := pick(modes); m != "" {
				fmt.Fprintf(&b, "    mode: %s\n", m)
			}
			if rng.IntN(3) == 0 {
				fmt.Fprintf(&b, "    namespaces: %s\n", yamlList(append(some(nsGlobs), pick(nsGlobs))))
			}
			if rng.IntN(4) == 0 {
				fmt.Fprintf(&b, "    images: %s\n", yamlList(append(some(repoGlobs), pick(repoGlobs))))
			}
			if rng.IntN(4) == 0 {
				fmt.Fprintf(&b, "    excludeImages: %s\n", yamlList(append(some(repoGlobs), pick(repoGlobs))))
			}
			checks := 0
			for checks == 0 {
				if rng.IntN(2) == 0 {
					fmt.Fprintf(&b, "    tags: {denyLatest: %t, denyUntagged: %t, deny: %s, allow: %s}\n", rng.IntN(2) == 0, rng.IntN(2) == 0, yamlList(some(tagGlobs)), yamlList(some(tagGlobs)))
					checks++
				}
				if rng.IntN(3) == 0 {
					fmt.Fprintf(&b, "    registries: {allow: %s, deny: %s}\n", yamlList(append(some(hostGlobs), pick(hostGlobs))), yamlList(some(hostGlobs)))
					checks++
				}
				if rng.IntN(3) == 0 {
					fmt.Fprintf(&b, "    repositories: {allow: %s, deny: %s}\n", yamlList(append(some(repoGlobs), pick(repoGlobs))), yamlList(some(repoGlobs)))
					checks++
				}
				if rng.IntN(4) == 0 {
					b.WriteString("    requireDigest: true\n")
					checks++
				}
			}
		}
		doc := b.String()
		d, err := policy.ReadDocument([]byte(doc))
		if err == nil {
			_, err = policy.Compile(d)
		}
		if err != nil {
			// A draw the policy compiler refuses (a tags rule that
			// checks nothing, say) is no policy to compare.
			skipped++
			continue
		}
		if _, err := vap.Generate(d, vap.Options{}); err != nil {
			t.Fatalf("policy compiles but does not generate: %v\n%s", err, doc)
		}
		p, compiled := generate(t, doc)
		for range nRefs {
			ref := pick(hosts) + pick(paths) + pick(tags) + pick(digests)
			before := t.Failed()
			if compare(t, p, compiled, podRequest(pick(namespaces), []string{ref}, nil)) {
				denied++
			}
			if !before && t.Failed() {
				t.Logf("policy:\n%s", doc)
			}
			compared++
		}
	}
	if denied == 0 || denied == compared {
		t.Fatalf("%d of %d comparisons denied: the draws do not exercise the policies", denied, compared)
	}
	if skipped > nPolicies/2 {
		t.Fatalf("%d of %d drawn policies did not compile", skipped, nPolicies)
	}
	t.Logf("%d policies (%d drawn ones did not compile), %d comparisons (%d denied), no disagreement", nPolicies-skipped, skipped, compared, denied)
}

func yamlList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
