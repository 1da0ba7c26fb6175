package cli

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
)

// TestVAPCommand runs admitfn vap as a user does: the objects on
// standard output (or in --static-dir), where each rule went on standard
// error, bad input refused with exit 2 and the reason.
func TestVAPCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  rules:\n  - name: x\n    tags: {deny: ['[']}\n"), 0o644)
	run := func(args ...string) (stdout, stderr string, code int) {
		cmd := exec.Command(binary, append([]string{"vap"}, args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errOut.String(), code
	}

	t.Run("the embedded policy", func(t *testing.T) {
		stdout, stderr, code := run()
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{`rule "no-latest": ValidatingAdmissionPolicy admitfn-default-enforce`, `rule "node-restriction": ValidatingAdmissionPolicy admitfn-default-enforce`} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, stderr)
			}
		}
		docs := strings.Split(strings.TrimPrefix(stdout, "---\n"), "\n---\n")
		if len(docs) != 2 {
			t.Fatalf("%d documents, want a policy and its binding:\n%s", len(docs), stdout)
		}
		var p admissionregistrationv1.ValidatingAdmissionPolicy
		var b admissionregistrationv1.ValidatingAdmissionPolicyBinding
		if err := yaml.UnmarshalStrict([]byte(docs[0]), &p); err != nil {
			t.Fatal(err)
		}
		if err := yaml.UnmarshalStrict([]byte(docs[1]), &b); err != nil {
			t.Fatal(err)
		}
		if b.Spec.PolicyName != p.Name || len(b.Spec.ValidationActions) != 1 || b.Spec.ValidationActions[0] != admissionregistrationv1.Deny {
			t.Errorf("binding %+v does not deny with policy %s", b.Spec, p.Name)
		}
		// What the webhook registration leaves out, the policy leaves out.
		if p.Spec.MatchConstraints.NamespaceSelector == nil || len(p.Spec.MatchConditions) == 0 {
			t.Errorf("the policy lacks the registration's namespaceSelector or match conditions: %+v", p.Spec.MatchConstraints)
		}
	})

	t.Run("declared workloads are left to the webhook, and said so", func(t *testing.T) {
		wl := filepath.Join(dir, "workloads.yaml")
		os.WriteFile(wl, []byte("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  workloads:\n  - {apiGroup: argoproj.io, kind: Rollout, podTemplate: spec.template}\n  rules:\n  - {name: x, tags: {denyLatest: true}}\n"), 0o644)
		_, stderr, code := run("--policy", wl)
		if code != 0 || !strings.Contains(stderr, "note: spec.workloads declares Rollout.argoproj.io: the policies do not judge these kinds") {
			t.Errorf("exit %d, stderr %q; want the note on declared kinds", code, stderr)
		}
	})

	t.Run("static manifests", func(t *testing.T) {
		static := filepath.Join(dir, "static")
		_, stderr, code := run("--static-dir", static)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		b, err := os.ReadFile(filepath.Join(static, "admitfn-validating-admission-policies.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(b), "name: admitfn-default-enforce.static.k8s.io"); n != 2 {
			t.Errorf("%d objects named admitfn-default-enforce.static.k8s.io, want the policy and its binding:\n%s", n, b)
		}
	})

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"a bad glob", []string{"--policy", bad}, `spec.rules[0].tags.deny[0]: "[" is not a valid glob`},
		{"no such file", []string{"--policy", filepath.Join(dir, "missing.yaml")}, "no such file"},
		{"out and static-dir", []string{"--out", filepath.Join(dir, "x"), "--static-dir", dir}, "--out and --static-dir exclude each other"},
		{"an argument", []string{"policy.yaml"}, `unexpected argument "policy.yaml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := run(tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, tc.want)
			}
		})
	}
}
