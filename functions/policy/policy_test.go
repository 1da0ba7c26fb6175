package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDefaultPolicyParses(t *testing.T) {
	p := Default()
	var names []string
	for _, r := range p.Rules {
		names = append(names, r.Name)
	}
	if diff := cmp.Diff([]string{"no-latest", "node-restriction"}, names); p.Name != "default" || diff != "" || p.Mutation != nil {
		t.Fatalf("Default() = %+v; rules (-want +got):\n%s", p, diff)
	}
	// The default must never reach a registry: it has to answer offline.
	for _, img := range []string{"nginx", "nginx:1.17.1", "registry.corp/app@sha256:" + strings.Repeat("a", 64)} {
		ref := mustRef(t, img)
		if got := p.Need(Request{Namespace: "default"}, ref); got != LevelName {
			t.Errorf("Default().Need(%q) = %v, want LevelName", img, got)
		}
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	const head = "apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\n"
	tests := []struct {
		name, doc, want string
	}{
		{"unknown top field", head + "spce: {}\n", `unknown field "spce"`},
		{"unknown rule field", head + "spec:\n  rules:\n  - name: a\n    tags: {denyLatest: true}\n    nonroot: true\n", `unknown field "spec.rules[0].nonroot"`},
		{"duplicate field", head + "spec:\n  rules:\n  - name: a\n    nonRoot: true\n    nonRoot: true\n", "nonRoot"},
		{"wrong apiVersion", "apiVersion: v1\nkind: ImagePolicy\nspec: {rules: [{name: a, nonRoot: true}]}\n", `apiVersion: "v1" is not supported`},
		{"wrong kind", "apiVersion: policy.admitfn.dev/v1alpha1\nkind: Policy\nspec: {rules: [{name: a, nonRoot: true}]}\n", `kind: "Policy" is not supported`},
		{"no rules", head + "spec: {rules: []}\n", "spec.rules: is empty"},
		{"bad mode", head + "spec: {rules: [{name: a, nonRoot: true, mode: enfoce}]}\n", `spec.rules[0].mode: "enfoce" is not one of`},
		{"bad onRegistryError", head + "spec: {rules: [{name: a, nonRoot: true, onRegistryError: maybe}]}\n", `spec.rules[0].onRegistryError: "maybe"`},
		{"bad duration", head + "spec: {rules: [{name: a, maxAge: 3 weeks}]}\n", `spec.rules[0].maxAge: "3 weeks" is not a duration`},
		{"bad timeout", head + "spec: {registry: {timeout: soon}, rules: [{name: a, nonRoot: true}]}\n", `spec.registry.timeout: "soon"`},
		{"bad digest", head + "spec: {rules: [{name: a, digests: [sha256:abc]}]}\n", `spec.rules[0].digests[0]: "sha256:abc"`},
		{"raw prefix repository", head + "spec: {rules: [{name: a, repositories: {allow: [registry.corp]}}]}\n", `spec.rules[0].repositories.allow[0]: repository pattern "registry.corp" names a host`},
		{"registry with path", head + "spec: {rules: [{name: a, registries: {allow: [registry.corp/team]}}]}\n", `spec.rules[0].registries.allow[0]`},
		{"empty rule", head + "spec: {rules: [{name: a}]}\n", `rule "a" checks nothing`},
		{"duplicate rule name", head + "spec: {rules: [{name: a, nonRoot: true}, {name: a, nonRoot: true}]}\n", `spec.rules[1].name: "a" is used`},
		{"break-glass outside forwarded space", head + "spec: {breakGlass: {annotation: break-glass, namespaces: ['*']}, rules: [{name: a, nonRoot: true}]}\n", "spec.breakGlass.annotation"},
		{"bad platform", head + "spec: {rules: [{name: a, platforms: [amd64]}]}\n", "spec.rules[0].platforms[0]"},
		{"bad glob", head + "spec: {exemptNamespaces: ['[a'], rules: [{name: a, nonRoot: true}]}\n", "spec.exemptNamespaces[0]"},
		{"wrong type", head + "spec: {rules: [{name: a, nonRoot: yes please}]}\n", "nonRoot"},
		{"not yaml", "{{{", "not valid YAML"},
		{"mutation without namespaces", head + "spec: {mutation: {pinDigests: true}, rules: [{name: a, nonRoot: true}]}\n", "spec.mutation.namespaces: is empty"},
		{"mutation changing nothing", head + "spec: {mutation: {namespaces: [a]}, rules: [{name: a, nonRoot: true}]}\n", "spec.mutation: changes nothing"},
		{"bad pin form", head + "spec: {mutation: {namespaces: [a], pinDigests: true, pinForm: short}, rules: [{name: a, nonRoot: true}]}\n", `spec.mutation.pinForm: "short"`},
		{"bad service type", head + "spec: {rules: [{name: a, serviceTypes: {deny: [Loadbalancer]}}]}\n", `spec.rules[0].serviceTypes.deny[0]: "Loadbalancer"`},
		{"empty service types", head + "spec: {rules: [{name: a, serviceTypes: {deny: []}}]}\n", "spec.rules[0].serviceTypes.deny: is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want an error containing %q", p, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse error = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestParseFullPolicy(t *testing.T) {
	doc := `
apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: corp}
spec:
  exemptNamespaces: [kube-system]
  breakGlass:
    annotation: admitfn.image-policy.k8s.io/break-glass
    namespaces: [prod-*]
  registry:
    insecure: ["127.0.0.1:*"]
    timeout: 3s
    cacheTTL: 1m
    negativeCacheTTL: 5s
    staleWindow: 0s
    cacheSize: 10
    platforms: [linux/amd64]
  rules:
  - name: trusted
    registries: {allow: [registry.corp, docker.io]}
  - name: fresh
    mode: warn
    onRegistryError: allow
    namespaces: [prod-*]
    maxAge: 30d
`
	p, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if p.Registry.Timeout != 3*time.Second || p.Registry.StaleWindow != 0 || p.Registry.CacheSize != 10 {
		t.Errorf("registry settings = %+v", p.Registry)
	}
	if !p.Registry.IsInsecure("127.0.0.1:5000") || p.Registry.IsInsecure("registry.corp") {
		t.Errorf("insecure matching wrong: %+v", p.Registry.Insecure)
	}
	if diff := cmp.Diff([]imageCheck{maxAgeCheck{30 * 24 * time.Hour}}, p.Rules[1].checks, cmp.AllowUnexported(maxAgeCheck{})); diff != "" {
		t.Errorf("maxAge 30d (-want +got):\n%s", diff)
	}
	if p.Rules[0].Mode != Enforce || p.Rules[0].OnRegistryError != FailClosed {
		t.Errorf("defaults not applied: %+v", p.Rules[0])
	}
}

func TestExamplePoliciesParse(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example policies: %v", err)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Parse(data); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		})
	}
}
