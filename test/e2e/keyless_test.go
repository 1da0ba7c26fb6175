//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/functions/keyless/keylesstest"
	"github.com/admitfn/admitfn/functions/registrytest"
)

// TestCosignKeyless puts keyless signature bundles (a test certificate
// authority and transparency log, keylesstest) on images through the
// referrers API and checks, image by image, that `cosign verify` with the
// same trusted root and identity agrees with admitfn check.
func TestCosignKeyless(t *testing.T) {
	const issuer, subject = "https://token.ci.example", "release@ci.example"
	dir := t.TempDir()
	log := keylesstest.NewLog(t)
	rootFile := filepath.Join(dir, "trusted_root.json")
	if err := os.WriteFile(rootFile, log.TrustedRoot, 0o644); err != nil {
		t.Fatal(err)
	}
	reg := registrytest.New(t, registrytest.WithReferrers())
	signs := func(d string) []byte { return keylesstest.Statement(d, keylesstest.SignPredicate, "{}") }
	cases := []struct {
		tag, why string
		bundle   func(digest string) []byte // nil: unsigned
		want     bool
	}{
		{"v1", "signed by the identity, with a log entry", func(d string) []byte { return log.Bundle(t, signs(d), subject, issuer, true) }, true},
		{"v2", "signed by another identity", func(d string) []byte { return log.Bundle(t, signs(d), "mallory@ci.example", issuer, true) }, false},
		{"v3", "from another issuer", func(d string) []byte { return log.Bundle(t, signs(d), subject, "https://evil.example", true) }, false},
		{"v4", "no log entry (the policy requires one, as cosign does)", func(d string) []byte { return log.Bundle(t, signs(d), subject, issuer, false) }, false},
		{"v5", "unsigned", nil, false},
	}
	for _, c := range cases {
		digest := reg.Push("app:"+c.tag, registrytest.Image(t, nil))
		if c.bundle != nil {
			reg.AttachBundle("app", digest, c.bundle(digest))
		}
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, []byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: [%q]}
  rules:
  - name: signed
    signatures:
      authorities:
      - name: release
        keyless:
          trustedRoot: |
            %s
          identities: [{issuer: %q, subject: %q}]
          transparencyLog: required
`, reg.Host(), strings.ReplaceAll(string(log.TrustedRoot), "\n", "\n            "), issuer, subject)), 0o644)
	t.Run("through kube-apiserver: ImagePolicyWebhook and the validating webhook", func(t *testing.T) {
		env := newWebhookEnv(t, "yaml")
		env.startBackend(t, policyFile)
		registerWebhooks(t, env.cp, fmt.Sprintf("https://127.0.0.1:%d", env.backendPort))
		ctx := t.Context()
		if _, err := env.cp.Admin.CoreV1().Pods(ns).Create(ctx, pod("signed", []string{reg.Ref("app", ":v1")}, nil, nil), metav1.CreateOptions{}); err != nil {
			t.Errorf("image signed keylessly by the identity: %v, want created", err)
		}
		_, err := env.cp.Admin.CoreV1().Pods(ns).Create(ctx, pod("unsigned", []string{reg.Ref("app", ":v5")}, nil, nil), metav1.CreateOptions{})
		wantForbidden(t, err, "image policy webhook backend denied one or more images", `violates rule "signed"`, "has no signature")
		_, err = env.cp.Admin.AppsV1().Deployments(ns).Create(ctx, deploymentOf("other", reg.Ref("app", ":v2")), metav1.CreateOptions{})
		wantDenied(t, err, `admission webhook "workloads.validating.admitfn.dev" denied the request`,
			"certificate identity mallory@ci.example (issuer https://token.ci.example) is not allowed")
		if _, err := env.cp.Admin.AppsV1().Deployments(ns).Create(ctx, deploymentOf("signed", reg.Ref("app", ":v1")), metav1.CreateOptions{}); err != nil {
			t.Errorf("Deployment of the signed image: %v, want created", err)
		}
	})
	for _, c := range cases {
		t.Run(c.why, func(t *testing.T) {
			image := reg.Ref("app", ":"+c.tag)
			admitted, out := admitfnCheck(t, policyFile, image)
			// The test authority's certificates carry no SCT: both sides
			// leave certificate transparency out.
			_, verr := cosign(t, dir, "verify", "--trusted-root", rootFile, "--new-bundle-format", "--insecure-ignore-sct",
				"--certificate-identity", subject, "--certificate-oidc-issuer", issuer, image)
			if admitted != c.want || (verr == nil) != c.want {
				t.Errorf("admitfn admitted=%v, cosign verify passed=%v, want both %v\n%s", admitted, verr == nil, c.want, out)
			}
		})
	}
}
