//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/functions/metrics/metricstest"
	"github.com/admitfn/admitfn/test/internal/harness"
)

// randomToken is a caller token as README makes one.
func randomToken(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestCallerTokens is the shape behind Knative's ingress, where TLS ends
// before admitfn: no client certificate, a bearer token instead. The
// apiserver sends it to both kinds of backend from the files admitfn
// admission-config writes (the ImagePolicyWebhook kubeconfig's tokenFile,
// and a WebhookAdmissionConfiguration for the webhooks); a caller without
// it gets 401 and leaves no decision behind.
func TestCallerTokens(t *testing.T) {
	ctx := context.Background()
	dir := keptDir(t)
	p := newPKI(t, dir)
	token := randomToken(t)
	callers := filepath.Join(dir, "callers")
	os.MkdirAll(callers, 0o700)
	os.WriteFile(filepath.Join(callers, "token"), []byte(token+"\n"), 0o600)
	tokenFile := filepath.Join(dir, "apiserver-token")
	os.WriteFile(tokenFile, []byte(token), 0o600)

	port, metricsPort := harness.FreePort(t), harness.FreePort(t)
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	certFile, keyFile := p.server(t, "admitfn", "127.0.0.1")
	backend := startProc(t, dir, "admitfn", admitfnBin, "serve",
		"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--tls-cert", certFile, "--tls-key", keyFile,
		"--token-dir", callers, "--metrics-listen", fmt.Sprintf("127.0.0.1:%d", metricsPort))
	client := harness.TLSClient(t, p.CAFile)
	waitReady(t, backend, client, base+"/health/readiness", 10*time.Second)

	acDir := filepath.Join(dir, "admission")
	out, err := exec.Command(admitfnBin, "admission-config", "--url", base+"/imagepolicy", "--ca-file", p.CAFile,
		"--token-file", tokenFile, "--webhook-url", base, "--default-allow=false", "--out", acDir).CombinedOutput()
	t.Logf("$ admitfn admission-config --url %s/imagepolicy --token-file ... --webhook-url %s\n%s", base, base, out)
	if err != nil {
		t.Fatal(err)
	}
	cp := startControlPlane(t, dir, p, controlPlaneOptions{
		AdmissionPlugins: []string{"ImagePolicyWebhook"},
		AdmissionConfig:  filepath.Join(acDir, "admission_config.yaml"),
	})
	registerWebhooks(t, cp, base)
	cp.namespace(t, "team-a")
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	decisions := func() float64 {
		return metricstest.Value(metricstest.Get(t, http.DefaultClient, metricsURL), "admitfn_decisions_total", nil)
	}

	t.Run("the apiserver's token is accepted by the ImagePolicyWebhook backend and the webhooks", func(t *testing.T) {
		if _, err := cp.Admin.CoreV1().Pods("team-a").Create(ctx, pod("tagged", []string{"nginx:1.17.1"}, nil, nil), metav1.CreateOptions{}); err != nil {
			t.Fatalf("pod nginx:1.17.1: %v; want created through all three", err)
		}
		_, err := cp.Admin.CoreV1().Pods("team-a").Create(ctx, pod("untagged", []string{"nginx"}, nil, nil), metav1.CreateOptions{})
		wantForbidden(t, err, "image policy webhook backend denied one or more images", `violates rule "no-latest"`)
		_, err = cp.Admin.AppsV1().Deployments("team-a").Create(ctx, deploymentOf("web", "nginx"), metav1.CreateOptions{})
		wantDenied(t, err, `admission webhook "workloads.validating.admitfn.dev" denied the request`, `violates rule "no-latest"`)
		// Answers counted by handler: the plugin's two, the validating
		// webhook's two, and the mutating webhook's three (it is called
		// before the validating one, for the denied Deployment too).
		for handler, want := range map[string]float64{"imagepolicy": 2, "validating": 2, "mutating": 3} {
			n := metricstest.Value(metricstest.Get(t, http.DefaultClient, metricsURL), "admitfn_decisions_total", map[string]string{"handler": handler})
			if n != want {
				t.Errorf("%s: %v answers counted, want %v", handler, n, want)
			}
		}
	})

	t.Run("a caller without the token gets 401 and leaves no decision", func(t *testing.T) {
		before := decisions()
		review := `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx"}],"namespace":"default"}}`
		for _, tc := range []struct{ path, auth string }{
			{"/imagepolicy", ""}, {"/validate", ""}, {"/mutate", ""},
			{"/imagepolicy", "Bearer " + strings.Repeat("0", len(token))},
		} {
			req, _ := http.NewRequest(http.MethodPost, base+tc.path, strings.NewReader(review))
			req.Header.Set("Content-Type", "application/json")
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("POST %s (Authorization %q): %d, want 401", tc.path, tc.auth, resp.StatusCode)
			}
		}
		families := metricstest.Get(t, http.DefaultClient, metricsURL)
		if after := metricstest.Value(families, "admitfn_decisions_total", nil); after != before {
			t.Errorf("decisions went from %v to %v: a refused caller was judged", before, after)
		}
		missing := metricstest.Value(families, "admitfn_unauthenticated_requests_total", map[string]string{"reason": "missing"})
		invalid := metricstest.Value(families, "admitfn_unauthenticated_requests_total", map[string]string{"reason": "invalid"})
		if missing != 3 || invalid != 1 {
			t.Errorf("refusals counted: %v missing, %v invalid; want 3 and 1", missing, invalid)
		}
		// With --metrics-listen, /metrics is not on the public listener at all.
		resp, err := client.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET /metrics on the public listener: %d, want it absent", resp.StatusCode)
		}
		resp, err = client.Get(base + "/health/readiness")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("readiness without a token: %d, want 200 (probes carry no token)", resp.StatusCode)
		}
	})
}
