package policy

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/admitfn/admitfn/functions/workload"
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

// TestNonRootAsTheKubelet judges the image's user as containerd and CRI-O
// report it to the kubelet, and as the kubelet's runAsNonRoot check then
// decides; the pod's runAsUser, when the request carries it, overrides
// the image's user; an image volume is mounted, not run.
func TestNonRootAsTheKubelet(t *testing.T) {
	p := mustParse(t, `  rules:
  - name: nonroot
    nonRoot: true
`)
	uid := func(n int64) *int64 { return &n }
	tests := []struct {
		name      string
		user      string
		runAsUser *int64
		volume    bool
		problem   string // empty: allowed
	}{
		{"numeric uid", "65532", nil, false, ""},
		{"uid and gid", "65532:65532", nil, false, ""},
		{"unset is root", "", nil, false, "config user unset, so root"},
		{"0", "0", nil, false, `runs as root (config user "0")`},
		{"00", "00", nil, false, `runs as root (config user "00")`},
		{"+0", "+0", nil, false, `runs as root (config user "+0")`},
		{"-0", "-0", nil, false, `runs as root (config user "-0")`},
		{"0 with a group", "0:1000", nil, false, `runs as root (config user "0:1000")`},
		{"root by name", "root", nil, false, "a user name"},
		{"another name may map to 0", "nobody", nil, false, "a user name"},
		{"hex is a name to the runtime", "0x0", nil, false, "a user name"},
		{"negative uid", "-5", nil, false, "invalid uid"},
		{"uid past 2^31-1", "2147483648", nil, false, "invalid uid"},
		{"pod runs a root image as 1000", "0", uid(1000), false, ""},
		{"pod runs a named-user image as 1000", "root", uid(1000), false, ""},
		{"pod asks for uid 0", "65532", uid(0), false, "securityContext.runAsUser is 0"},
		{"image volume: not run", "0", nil, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := "registry.corp/app:1"
			req := Request{Namespace: "default", Images: []Image{{Ref: img, Field: "spec.containers[0].image", RunAsUser: tc.runAsUser, Volume: tc.volume}}}
			facts := map[string]Facts{img: {Level: LevelConfig, Digest: dA, Configs: []ImageConfig{{User: tc.user, Created: now}}}}
			d := p.Evaluate(req, facts, now)
			if tc.problem == "" {
				if !d.Allowed {
					t.Errorf("denied: %s", d.Reason())
				}
				return
			}
			if d.Allowed || !strings.Contains(d.Reason(), tc.problem) {
				t.Errorf("Allowed=%v Reason=%q, want a denial saying %q", d.Allowed, d.Reason(), tc.problem)
			}
		})
	}
}

// FuzzImageUser checks imageUser against the runtime's own reading for
// any string: a uid exactly when strconv.ParseInt reads the part before
// the first ':'.
func FuzzImageUser(f *testing.F) {
	for _, s := range []string{"", "0", "root", "0:0", "+0", "1000:1000", ":", "a:b:c", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		uid, name := imageUser(s)
		if s == "" {
			if uid != nil || name != "" {
				t.Fatalf("imageUser(%q) = %v, %q; want neither", s, uid, name)
			}
			return
		}
		first := strings.Split(s, ":")[0]
		n, err := strconv.ParseInt(first, 10, 64)
		switch {
		case err == nil && (uid == nil || *uid != n || name != ""):
			t.Fatalf("imageUser(%q) = %v, %q; the runtime reads uid %d", s, uid, name, n)
		case err != nil && (uid != nil || name != first):
			t.Fatalf("imageUser(%q) = %v, %q; the runtime reads user name %q", s, uid, name, first)
		}
		problem, _ := nonRoot(nil, s)
		if root := uid != nil && *uid == 0; root && problem == "" {
			t.Fatalf("nonRoot(%q) allowed uid 0", s)
		}
		if name != "" && problem == "" {
			t.Fatalf("nonRoot(%q) allowed a user name", s)
		}
	})
}

func TestWorkloadDeclarations(t *testing.T) {
	p := mustParse(t, `  workloads:
  - {apiGroup: argoproj.io, kind: Rollout, podTemplate: spec.template}
  - {apiGroup: example.dev, kind: Runner, podTemplate: "."}
  rules:
  - name: no-latest
    tags: {denyLatest: true}
`)
	if diff := cmp.Diff(workload.Kinds{"argoproj.io/Rollout": {"spec", "template"}, "example.dev/Runner": nil}, p.Workloads); diff != "" {
		t.Errorf("Workloads (-want +got):\n%s", diff)
	}
	for decl, want := range map[string]string{
		`{apiGroup: apps, kind: Deployment, podTemplate: spec.template}`:             "already known",
		`{apiGroup: serving.knative.dev, kind: Service, podTemplate: spec.template}`: "already known",
		`{apiGroup: argoproj.io, kind: Rollout, podTemplate: ""}`:                    "podTemplate: is empty",
		`{apiGroup: argoproj.io, kind: Rollout, podTemplate: spec..template}`:        "empty path segment",
		`{apiGroup: argoproj.io, podTemplate: spec.template}`:                        "kind: is empty",
	} {
		_, err := Parse([]byte("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  workloads:\n  - " + decl + "\n  rules:\n  - {name: x, tags: {denyLatest: true}}\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("workloads %s: %v, want an error containing %q", decl, err, want)
		}
	}
}
