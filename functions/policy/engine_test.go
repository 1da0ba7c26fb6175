package policy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/admitfn/admitfn/functions/imageref"
)

func mustRef(t *testing.T, s string) imageref.Ref {
	t.Helper()
	r, err := imageref.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustParse(t *testing.T, rules string) *Policy {
	t.Helper()
	p, err := Parse([]byte("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: test}\nspec:\n" + rules))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	dA  = "sha256:" + strings.Repeat("a", 64)
	dB  = "sha256:" + strings.Repeat("b", 64)
	now = time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
)

// outcome is what a test compares: allowed, and per violation "rule/mode: image".
type outcome struct {
	Allowed    bool
	Violations []string
	FailedOpen int
}

func summarize(d Decision) outcome {
	o := outcome{Allowed: d.Allowed, FailedOpen: len(d.FailedOpen)}
	for _, v := range d.Violations {
		o.Violations = append(o.Violations, v.Rule+"/"+string(v.Mode)+": "+v.subject())
	}
	return o
}

func TestEvaluateNameRules(t *testing.T) {
	p := mustParse(t, `
  exemptNamespaces: [kube-system]
  rules:
  - name: no-latest
    tags: {denyLatest: true, denyUntagged: true}
  - name: no-dev-tags
    tags: {deny: ["*-dev", "dev-*"]}
  - name: trusted-registries
    namespaces: [prod]
    registries: {allow: [registry.corp, docker.io]}
  - name: team-repos
    namespaces: [prod]
    images: ["registry.corp/**"]
    repositories: {allow: ["registry.corp/team/*"], deny: ["registry.corp/team/legacy"]}
  - name: pinned
    mode: warn
    namespaces: [prod]
    requireDigest: true
  - name: known-digests
    mode: audit
    namespaces: [prod]
    images: ["registry.corp/team/pinned"]
    digests: ["`+dA+`"]
`)
	tests := []struct {
		name string
		ns   string
		imgs []string
		want outcome
	}{
		{"untagged denied", "default", []string{"nginx"}, outcome{Violations: []string{"no-latest/enforce: nginx"}}},
		{"latest denied", "default", []string{"nginx:latest"}, outcome{Violations: []string{"no-latest/enforce: nginx:latest"}}},
		{"tagged allowed", "default", []string{"nginx:1.17.1"}, outcome{Allowed: true}},
		{"digest pins latest", "default", []string{"nginx:latest@" + dA}, outcome{Allowed: true}},
		{"digest only", "default", []string{"nginx@" + dA}, outcome{Allowed: true}},
		{"port is not a tag", "default", []string{"localhost:5000/app"}, outcome{Violations: []string{"no-latest/enforce: localhost:5000/app"}}},
		{"one bad image denies the pod", "default", []string{"nginx:1.17.1", "busybox"}, outcome{Violations: []string{"no-latest/enforce: busybox"}}},
		{"dev tag denied", "default", []string{"app:1.0-dev"}, outcome{Violations: []string{"no-dev-tags/enforce: app:1.0-dev"}}},
		{"exempt namespace", "kube-system", []string{"nginx"}, outcome{Allowed: true}},
		{"untrusted registry", "prod", []string{"quay.io/x/y:1"}, outcome{Violations: []string{"trusted-registries/enforce: quay.io/x/y:1", "pinned/warn: quay.io/x/y:1"}}},
		{"lookalike registry", "prod", []string{"registry.corp.evil.io/team/app:1"}, outcome{Violations: []string{"trusted-registries/enforce: registry.corp.evil.io/team/app:1", "pinned/warn: registry.corp.evil.io/team/app:1"}}},
		{"registry in path", "prod", []string{"evil.io/registry.corp/team/app:1"}, outcome{Violations: []string{"trusted-registries/enforce: evil.io/registry.corp/team/app:1", "pinned/warn: evil.io/registry.corp/team/app:1"}}},
		{"docker hub spelled three ways", "prod", []string{"nginx@" + dA, "docker.io/library/nginx@" + dA, "index.docker.io/library/nginx@" + dA}, outcome{Allowed: true}},
		{"team repo allowed, warned unpinned", "prod", []string{"registry.corp/team/app:1"}, outcome{Allowed: true, Violations: []string{"pinned/warn: registry.corp/team/app:1"}}},
		{"other team repo", "prod", []string{"registry.corp/other/app@" + dA}, outcome{Violations: []string{"team-repos/enforce: registry.corp/other/app@" + dA}}},
		{"denied repo", "prod", []string{"registry.corp/team/legacy@" + dA}, outcome{Violations: []string{"team-repos/enforce: registry.corp/team/legacy@" + dA}}},
		{"digest outside allow-list audited", "prod", []string{"registry.corp/team/pinned@" + dB}, outcome{Allowed: true, Violations: []string{"known-digests/audit: registry.corp/team/pinned@" + dB}}},
		{"digest on allow-list", "prod", []string{"registry.corp/team/pinned@" + dA}, outcome{Allowed: true}},
		{"invalid reference", "default", []string{"NGINX"}, outcome{Violations: []string{"image-reference/enforce: NGINX"}}},
		{"empty reference", "default", []string{""}, outcome{Violations: []string{"image-reference/enforce: spec.containers[0].image"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := Request{Namespace: tc.ns}
			for _, img := range tc.imgs {
				ref, err := imageref.Parse(img)
				if err == nil && p.Need(Request{Namespace: tc.ns}, ref) != LevelName {
					t.Fatalf("Need(%q) = %v: a name rule must not ask the registry", img, p.Need(Request{Namespace: tc.ns}, ref))
				}
				req.Images = append(req.Images, Image{Ref: img, Field: "spec.containers[0].image"})
			}
			got := summarize(p.Evaluate(req, nil, now))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Evaluate (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEvaluateRegistryRules(t *testing.T) {
	p := mustParse(t, `
  registry:
    platforms: [linux/amd64, linux/arm64]
  rules:
  - name: resolvable
    images: ["registry.corp/**"]
    resolvable: true
  - name: fail-open-digests
    images: ["registry.corp/open/*"]
    onRegistryError: allow
    digests: ["`+dA+`"]
  - name: known-digests
    images: ["registry.corp/pinned/*"]
    digests: ["`+dA+`"]
  - name: nonroot
    images: ["registry.corp/secure/*"]
    nonRoot: true
  - name: fresh
    images: ["registry.corp/fresh/*"]
    maxAge: 30d
  - name: labelled
    images: ["registry.corp/labelled/*"]
    requiredLabels: [org.opencontainers.image.source, "tier=back*"]
  - name: multi-arch
    images: ["registry.corp/multi/*"]
    platforms: [linux/amd64, linux/arm64]
`)
	amd := Platform{OS: "linux", Arch: "amd64"}
	arm := Platform{OS: "linux", Arch: "arm64", Variant: "v8"}
	cfg := func(user string, created time.Time, labels map[string]string) []ImageConfig {
		return []ImageConfig{{Platform: amd, User: user, Created: created, Labels: labels}}
	}
	unreachable := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	tests := []struct {
		name    string
		img     string
		need    Level
		facts   Facts
		want    outcome
		problem string
	}{
		{"tag resolves", "registry.corp/app:1", LevelDigest, Facts{Level: LevelDigest, Digest: dA}, outcome{Allowed: true}, ""},
		{"tag missing", "registry.corp/app:nope", LevelDigest, Facts{Level: LevelDigest, NotFound: true}, outcome{Violations: []string{"resolvable/enforce: registry.corp/app:nope"}}, `tag "nope" was not found in registry.corp/app`},
		{"registry down fails closed", "registry.corp/app:1", LevelDigest, Facts{Level: LevelDigest, Err: unreachable}, outcome{Violations: []string{"resolvable/enforce: registry.corp/app:1"}}, "connection refused"},
		{"registry down fails open", "registry.corp/open/app:1", LevelDigest, Facts{Level: LevelDigest, Err: unreachable}, outcome{Violations: []string{"resolvable/enforce: registry.corp/open/app:1"}, FailedOpen: 1}, ""},
		{"resolved digest on allow-list", "registry.corp/pinned/app:1", LevelDigest, Facts{Level: LevelDigest, Digest: dA}, outcome{Allowed: true}, ""},
		{"moved tag judged by new digest", "registry.corp/pinned/app:1", LevelDigest, Facts{Level: LevelDigest, Digest: dB}, outcome{Violations: []string{"known-digests/enforce: registry.corp/pinned/app:1"}}, "digest " + dB + " is not on the allow-list"},
		{"written digest needs no lookup but resolvable does", "registry.corp/pinned/app@" + dA, LevelDigest, Facts{Level: LevelDigest, Digest: dA}, outcome{Allowed: true}, ""},
		{"root user", "registry.corp/secure/app:1", LevelConfig, Facts{Level: LevelConfig, Digest: dA, Configs: cfg("", now, nil)}, outcome{Violations: []string{"nonroot/enforce: registry.corp/secure/app:1"}}, "runs as root"},
		{"root by name with group", "registry.corp/secure/app:1", LevelConfig, Facts{Level: LevelConfig, Digest: dA, Configs: cfg("root:1000", now, nil)}, outcome{Violations: []string{"nonroot/enforce: registry.corp/secure/app:1"}}, `a user name (config user "root:1000")`},
		{"non-root user", "registry.corp/secure/app:1", LevelConfig, Facts{Level: LevelConfig, Digest: dA, Configs: cfg("65532", now, nil)}, outcome{Allowed: true}, ""},
		{"old image", "registry.corp/fresh/app:1", LevelConfig, Facts{Level: LevelConfig, Digest: dA, Configs: cfg("1", now.Add(-31*24*time.Hour), nil)}, outcome{Violations: []string{"fresh/enforce: registry.corp/fresh/app:1"}}, "more than 720h0m0s"},
		{"young image", "registry.corp/fresh/app:1", LevelConfig, Facts{Level: LevelConfig, Digest: dA, Configs: cfg("1", now.Add(-24*time.Hour), nil)}, outcome{Allowed: true}, ""},
		{"missing label", "registry.corp/labelled/app:1", LevelConfig, Facts{Level: LevelConfig, Digest: dA, Configs: cfg("1", now, map[string]string{"tier": "backend"})}, outcome{Violations: []string{"labelled/enforce: registry.corp/labelled/app:1"}}, `lacks label "org.opencontainers.image.source"`},
		{"label value off pattern", "registry.corp/labelled/app:1", LevelConfig, Facts{Level: LevelConfig, Digest: dA, Configs: cfg("1", now, map[string]string{"tier": "front", "org.opencontainers.image.source": "x"})}, outcome{Violations: []string{"labelled/enforce: registry.corp/labelled/app:1"}}, `label "tier" is "front"`},
		{"labels present", "registry.corp/labelled/app:1", LevelConfig, Facts{Level: LevelConfig, Digest: dA, Configs: cfg("1", now, map[string]string{"tier": "backend", "org.opencontainers.image.source": "x"})}, outcome{Allowed: true}, ""},
		{"single-arch lacks arm64", "registry.corp/multi/app:1", LevelConfig, Facts{Level: LevelConfig, Digest: dA, Platforms: []Platform{amd}}, outcome{Violations: []string{"multi-arch/enforce: registry.corp/multi/app:1"}}, "does not provide platform linux/arm64"},
		{"index has both", "registry.corp/multi/app:1", LevelConfig, Facts{Level: LevelConfig, Digest: dA, Platforms: []Platform{amd, arm}}, outcome{Allowed: true}, ""},
		{"facts not fetched fail closed", "registry.corp/secure/app:1", LevelConfig, Facts{}, outcome{Violations: []string{"resolvable/enforce: registry.corp/secure/app:1", "nonroot/enforce: registry.corp/secure/app:1"}}, "not fetched"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Need(Request{Namespace: "default"}, mustRef(t, tc.img)); got != tc.need {
				t.Errorf("Need(%q) = %v, want %v", tc.img, got, tc.need)
			}
			req := Request{Namespace: "default", Images: []Image{{Ref: tc.img, Field: "spec.containers[0].image"}}}
			d := p.Evaluate(req, map[string]Facts{tc.img: tc.facts}, now)
			if diff := cmp.Diff(tc.want, summarize(d)); diff != "" {
				t.Errorf("Evaluate (-want +got):\n%s", diff)
			}
			if tc.problem != "" && !strings.Contains(d.Reason(), tc.problem) {
				t.Errorf("Reason() = %q, want it to contain %q", d.Reason(), tc.problem)
			}
		})
	}
}

func TestReasonNamesImageRuleAndFix(t *testing.T) {
	d := Default().Evaluate(Request{Namespace: "default", Images: []Image{{Ref: "nginx", Field: "spec.containers[0].image"}}}, nil, now)
	want := `image "nginx" (spec.containers[0].image) violates rule "no-latest": names no tag, so the runtime pulls the mutable tag "latest"; to pass, name a version tag (nginx:<version>) or a digest (nginx@sha256:<digest>)`
	if diff := cmp.Diff(want, d.Reason()); diff != "" {
		t.Errorf("Reason (-want +got):\n%s", diff)
	}
}

func TestBreakGlass(t *testing.T) {
	p := mustParse(t, `
  breakGlass:
    annotation: admitfn.image-policy.k8s.io/break-glass
    namespaces: [prod-*]
  rules:
  - name: no-latest
    tags: {denyLatest: true}
`)
	key := "admitfn.image-policy.k8s.io/break-glass"
	tests := []struct {
		name        string
		ns          string
		annotations map[string]string
		want        map[string]string
	}{
		{"honoured", "prod-eu", map[string]string{key: "INC-42"}, map[string]string{"decision": "break-glass", "break-glass": "INC-42"}},
		{"refused outside namespaces", "dev", map[string]string{key: "INC-42"}, map[string]string{"decision": "denied", "break-glass-refused": "true"}},
		{"empty reason ignored", "prod-eu", map[string]string{key: " "}, map[string]string{"decision": "denied"}},
		{"other annotation ignored", "prod-eu", map[string]string{"other.image-policy.k8s.io/x": "y"}, map[string]string{"decision": "denied"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Evaluate(Request{Namespace: tc.ns, Annotations: tc.annotations, Images: []Image{{Ref: "nginx:latest"}}}, nil, now)
			got := d.AuditAnnotations()
			for _, k := range []string{"policy", "violations"} {
				if got[k] == "" {
					t.Errorf("audit annotation %q missing: %v", k, got)
				}
				delete(got, k)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("AuditAnnotations (-want +got):\n%s", diff)
			}
			if d.Allowed != (tc.want["decision"] == "break-glass") {
				t.Errorf("Allowed = %v", d.Allowed)
			}
		})
	}
}

func TestReasonIsBounded(t *testing.T) {
	var req Request
	for range 10000 {
		req.Images = append(req.Images, Image{Ref: "nginx", Field: "spec.containers[0].image"})
	}
	d := Default().Evaluate(req, nil, now)
	if d.Allowed || len(d.Denials()) != 10000 {
		t.Fatalf("Allowed=%v denials=%d, want 10000 denials", d.Allowed, len(d.Denials()))
	}
	if r := d.Reason(); len(r) > 2000 || !strings.HasSuffix(r, "and 9995 more") {
		t.Errorf("Reason is %d bytes ending %q, want a short one ending \"and 9995 more\"", len(r), r[max(0, len(r)-40):])
	}
}

func TestAuditAnnotationsAreBounded(t *testing.T) {
	var req Request
	for range 1000 {
		req.Images = append(req.Images, Image{Ref: "nginx"})
	}
	a := Default().Evaluate(req, nil, now).AuditAnnotations()
	if v := a["violations"]; len(v) > 1000 || !strings.HasSuffix(v, "and 980 more") {
		t.Errorf("violations annotation is %d bytes ending %q", len(v), v[max(0, len(v)-30):])
	}
}
