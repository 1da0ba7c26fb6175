//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/functions/registrytest"
)

// notationCLI runs the pinned notation CLI with its configuration (keys,
// trust store, trust policy) under dir.
func notationCLI(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	return pinnedCLI(t, "notation", "NOTATION", dir, []string{"HOME=" + dir, "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}, args...)
}

// TestNotation signs images in a loopback registry with the real notation
// CLI (test keys it generates, JWS and COSE envelopes, through the
// referrers API and through its tag fallback) and checks, image by image,
// that `notation verify` with a trust policy of the same trust store and
// identities agrees with admitfn check, then one allowed and one refused
// image through kube-apiserver.
func TestNotation(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"release", "stranger"} {
		if _, err := notationCLI(t, dir, "cert", "generate-test", name); err != nil {
			t.Fatal(err)
		}
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, "config", "notation", "truststore", "x509", "ca", "release", "release.crt"))
	if err != nil {
		t.Fatal(err)
	}
	const identity = "x509.subject: C=US, ST=WA, L=Seattle, O=Notary, CN=release"
	for _, referrersAPI := range []bool{false, true} {
		t.Run(fmt.Sprintf("referrers API %v", referrersAPI), func(t *testing.T) {
			var opts []registrytest.Option
			if referrersAPI {
				opts = append(opts, registrytest.WithReferrers())
			}
			reg := registrytest.New(t, opts...)
			sign := func(key, digest string, extra ...string) {
				t.Helper()
				args := append([]string{"sign", "--insecure-registry", "--key", key}, extra...)
				if _, err := notationCLI(t, dir, append(args, reg.Ref("app", "@"+digest))...); err != nil {
					t.Fatal(err)
				}
			}
			jws := reg.Push("app:jws", registrytest.Image(t, nil))
			sign("release", jws)
			cose := reg.Push("app:cose", registrytest.Image(t, nil))
			sign("release", cose, "--signature-format", "cose")
			byStranger := reg.Push("app:stranger", registrytest.Image(t, nil))
			sign("stranger", byStranger)
			reg.Push("app:unsigned", registrytest.Image(t, nil))
			moved := reg.Push("app:moved", registrytest.Image(t, nil))
			sign("release", moved)
			reg.Push("app:moved", registrytest.Image(t, nil)) // the tag now names an image nobody signed
			expiring := reg.Push("app:expiring", registrytest.Image(t, nil))
			sign("release", expiring, "--expiry", "1s")
			// Notation judges expiry at the wall clock; the case waits
			// until the signature has surely expired.
			expired := time.Now().Add(1500 * time.Millisecond)
			index := reg.PushIndex("app:index", []v1.Platform{{OS: "linux", Architecture: "amd64"}}, nil)
			sign("release", index)

			// One trust policy per set of trusted identities; the trust
			// store is always the release key's.
			policies := map[string][]string{"release": {identity}, "anyone": {"*"}, "other": {"x509.subject: C=US, ST=WA, O=Notary, CN=security"}}
			check := func(t *testing.T, image, policy string) (bool, bool, string) {
				ids, err := json.Marshal(policies[policy])
				if err != nil {
					t.Fatal(err)
				}
				trustPolicy := fmt.Sprintf(`{"version":"1.0","trustPolicies":[{"name":"p","registryScopes":["*"],"signatureVerification":{"level":"strict"},"trustStores":["ca:release"],"trustedIdentities":%s}]}`, ids)
				if err := os.WriteFile(filepath.Join(dir, "config", "notation", "trustpolicy.json"), []byte(trustPolicy), 0o600); err != nil {
					t.Fatal(err)
				}
				_, verr := notationCLI(t, dir, "verify", "--insecure-registry", image)
				policyFile := filepath.Join(t.TempDir(), "policy.yaml")
				writeNotationPolicy(t, policyFile, reg.Host(), certPEM, policies[policy])
				admitted, out := admitfnCheck(t, policyFile, image)
				return admitted, verr == nil, out
			}
			for _, tc := range []struct {
				name, image, policy string
				want                bool
			}{
				{"JWS by the trusted identity", reg.Ref("app", ":jws"), "release", true},
				{"COSE by the trusted identity", reg.Ref("app", ":cose"), "release", true},
				{"by digest", reg.Ref("app", "@"+jws), "release", true},
				{"an index signed as a whole", reg.Ref("app", ":index"), "release", true},
				{"any identity of the trust store", reg.Ref("app", ":jws"), "anyone", true},
				{"identity not trusted", reg.Ref("app", ":jws"), "other", false},
				{"signed by a key the trust store does not hold", reg.Ref("app", ":stranger"), "anyone", false},
				{"unsigned", reg.Ref("app", ":unsigned"), "anyone", false},
				{"tag moved after signing", reg.Ref("app", ":moved"), "anyone", false},
				{"signature expired", reg.Ref("app", ":expiring"), "anyone", false},
			} {
				t.Run(tc.name, func(t *testing.T) {
					if tc.image == reg.Ref("app", ":expiring") {
						time.Sleep(time.Until(expired))
					}
					admitted, verified, out := check(t, tc.image, tc.policy)
					if admitted != tc.want || verified != tc.want {
						t.Errorf("admitfn admitted=%v, notation verify passed=%v, want both %v\n%s", admitted, verified, tc.want, out)
					}
				})
			}
			if referrersAPI {
				return
			}
			t.Run("through kube-apiserver: ImagePolicyWebhook and the validating webhook", func(t *testing.T) {
				policyFile := filepath.Join(t.TempDir(), "policy.yaml")
				writeNotationPolicy(t, policyFile, reg.Host(), certPEM, []string{identity})
				env := newWebhookEnv(t, "yaml")
				env.startBackend(t, policyFile)
				registerWebhooks(t, env.cp, fmt.Sprintf("https://127.0.0.1:%d", env.backendPort))
				ctx := t.Context()
				if _, err := env.cp.Admin.CoreV1().Pods(ns).Create(ctx, pod("notation-signed", []string{reg.Ref("app", ":cose")}, nil, nil), metav1.CreateOptions{}); err != nil {
					t.Errorf("image signed with notation by the trusted identity: %v, want created", err)
				}
				_, err := env.cp.Admin.AppsV1().Deployments(ns).Create(ctx, deploymentOf("stranger", reg.Ref("app", ":stranger")), metav1.CreateOptions{})
				wantDenied(t, err, `admission webhook "workloads.validating.admitfn.dev" denied the request`, `not as Notation authority "release"`)
				_, err = env.cp.Admin.CoreV1().Pods(ns).Create(ctx, pod("unsigned", []string{reg.Ref("app", ":unsigned")}, nil, nil), metav1.CreateOptions{})
				wantForbidden(t, err, "image policy webhook backend denied one or more images", "has no signature")
			})
		})
	}
}

// writeNotationPolicy writes to file a policy whose one rule wants every
// image of host signed with notation: certPEM the trust store, ids the
// trusted identities.
func writeNotationPolicy(t *testing.T, file, host string, certPEM []byte, ids []string) {
	t.Helper()
	quoted, err := json.Marshal(ids)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, fmt.Appendf(nil, `apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: [%q]}
  rules:
  - name: notation-signed
    signatures:
      authorities:
      - name: release
        notation:
          trustStore: |
            %s
          trustedIdentities: %s
`, host, strings.ReplaceAll(strings.TrimSpace(string(certPEM)), "\n", "\n            "), quoted), 0o644); err != nil {
		t.Fatal(err)
	}
}
