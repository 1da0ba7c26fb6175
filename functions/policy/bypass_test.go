package policy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The tests in this file each close a way around a rule: an answer must
// match what the kubelet and the runtime will do with the reference.

// TestTagGlobsJudgeThePulledTag: an untagged reference makes the runtime
// pull "latest", so tag globs judge "latest"; a digest alone names no tag.
func TestTagGlobsJudgeThePulledTag(t *testing.T) {
	p := mustParse(t, `  rules:
  - name: versions-only
    tags: {allow: ["v*"]}
  - name: no-latest-glob
    tags: {deny: ["lat*"]}
`)
	tests := []struct {
		img    string
		want   outcome
		reason string
	}{
		{"registry.corp/app:v1", outcome{Allowed: true}, ""},
		{"registry.corp/app", outcome{Violations: []string{"versions-only/enforce: registry.corp/app", "no-latest-glob/enforce: registry.corp/app"}},
			`tag "latest" (implied: the reference names no tag) is not allowed`},
		{"registry.corp/app:latest", outcome{Violations: []string{"versions-only/enforce: registry.corp/app:latest", "no-latest-glob/enforce: registry.corp/app:latest"}}, `tag "latest" is not allowed`},
		{"registry.corp/app@" + dA, outcome{Allowed: true}, ""},
		{"registry.corp/app:v2@" + dA, outcome{Allowed: true}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.img, func(t *testing.T) {
			d := p.Evaluate(Request{Namespace: "default", Images: []Image{{Ref: tc.img}}}, nil, now)
			if diff := cmp.Diff(tc.want, summarize(d)); diff != "" {
				t.Errorf("Evaluate (-want +got):\n%s", diff)
			}
			if !strings.Contains(d.Reason(), tc.reason) {
				t.Errorf("Reason() = %q, want it to contain %q", d.Reason(), tc.reason)
			}
		})
	}
}
