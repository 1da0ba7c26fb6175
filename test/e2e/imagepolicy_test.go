//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/test/internal/harness"
)

const ns = "e2e"

// webhookEnv is a control plane whose ImagePolicyWebhook plugin points at
// a port where admitfn may or may not be listening yet.
type webhookEnv struct {
	dir                         string
	pki                         *pki
	cp                          *controlPlane
	backendURL                  string
	backendPort                 int
	apiserverCert, apiserverKey string
}

// newWebhookEnv writes the admission files with admitfn admission-config
// (the user's path) in the given format and starts the control plane.
func newWebhookEnv(t testing.TB, format string) *webhookEnv {
	t.Helper()
	dir := keptDir(t)
	env := &webhookEnv{dir: dir, pki: newPKI(t, dir), backendPort: harness.FreePort(t)}
	env.backendURL = fmt.Sprintf("https://127.0.0.1:%d/imagepolicy", env.backendPort)
	env.apiserverCert, env.apiserverKey = env.pki.client(t, "apiserver-to-admitfn", "kube-apiserver-imagepolicy")
	acDir := filepath.Join(dir, "policywebhook")
	out, err := exec.Command(admitfnBin, "admission-config", "--url", env.backendURL,
		"--ca-file", env.pki.CAFile, "--client-cert", env.apiserverCert, "--client-key", env.apiserverKey,
		"--allow-ttl", "100", "--deny-ttl", "50", "--retry-backoff", "100", "--default-allow=false",
		// The webhook plugins present the same client certificate to the
		// same backend, should a test register config/webhooks too.
		"--webhook-url", fmt.Sprintf("https://127.0.0.1:%d", env.backendPort),
		"--format", format, "--out", acDir).CombinedOutput()
	if err != nil {
		t.Fatalf("admitfn admission-config: %v\n%s", err, out)
	}
	env.cp = startControlPlane(t, dir, env.pki, controlPlaneOptions{
		AdmissionPlugins: []string{"NodeRestriction", "ImagePolicyWebhook"},
		AdmissionConfig:  filepath.Join(acDir, "admission_config."+format),
	})
	env.cp.namespace(t, ns)
	return env
}

// startBackend runs admitfn serve with TLS and --client-ca on the port the
// apiserver calls, waits until it is ready, and returns an HTTPS client
// holding the apiserver's client certificate.
func (env *webhookEnv) startBackend(t testing.TB, policyFile string, extra ...string) *http.Client {
	t.Helper()
	backendCert, backendKey := env.pki.server(t, "admitfn", "127.0.0.1")
	args := []string{"serve",
		"--listen", fmt.Sprintf("127.0.0.1:%d", env.backendPort),
		"--tls-cert", backendCert, "--tls-key", backendKey, "--client-ca", env.pki.CAFile}
	if policyFile != "" {
		args = append(args, "--policy", policyFile)
	}
	backend := startProc(t, env.dir, "admitfn", admitfnBin, append(args, extra...)...)
	pair, err := tls.LoadX509KeyPair(env.apiserverCert, env.apiserverKey)
	if err != nil {
		t.Fatal(err)
	}
	client := harness.TLSClient(t, env.pki.CAFile, pair)
	waitReady(t, backend, client, fmt.Sprintf("https://127.0.0.1:%d/health/readiness", env.backendPort), 10*time.Second)
	return client
}

// TestImagePolicyWebhook runs the seed scenarios against kube-apiserver with
// the ImagePolicyWebhook plugin pointed at admitfn. The subtests share one
// control plane and run in order: the first one needs the backend down.
func TestImagePolicyWebhook(t *testing.T) {
	env := newWebhookEnv(t, "json")
	cp, p, backendURL, backendPort := env.cp, env.pki, env.backendURL, env.backendPort
	ctx := context.Background()
	pods := cp.Admin.CoreV1().Pods(ns)

	t.Run("seed 000: backend unreachable, defaultAllow=false: pods are forbidden", func(t *testing.T) {
		_, err := pods.Create(ctx, pod("before-backend", []string{"nginx:1.17.1"}, nil, nil), metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), backendURL) {
			t.Fatalf("create = %v, want Forbidden naming %s", err, backendURL)
		}
		t.Logf("apiserver said: %v", err)
	})

	reg := registrytest.New(t)
	approvedA := registrytest.Image(t, nil)
	approvedB := registrytest.Image(t, nil)
	digestA := reg.Push("approved/app:v1", approvedA)
	reg.Push("app:v1", approvedA)
	digestB := reg.Push("approved/app:other", approvedB)
	policyFile := filepath.Join(env.dir, "policy.yaml")
	os.WriteFile(policyFile, []byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: e2e}
spec:
  registry:
    insecure: [%[1]q]
    cacheTTL: 1s
    negativeCacheTTL: 1s
  rules:
  - name: no-latest
    tags: {denyLatest: true, denyUntagged: true}
  - name: resolvable
    images: ["%[1]s/**"]
    resolvable: true
  - name: approved-digests
    images: ["%[1]s/approved/*"]
    digests: [%[2]s]
`, reg.Host(), digestA)), 0o644)
	withCert := env.startBackend(t, policyFile)

	t.Run("seed 000: backend started: pods are judged", func(t *testing.T) {
		if _, err := pods.Create(ctx, pod("after-backend", []string{"nginx:1.17.1"}, nil, nil), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create nginx:1.17.1 = %v, want created", err)
		}
	})

	t.Run("seed 001: nginx denied with our reason, nginx:1.17.1 created", func(t *testing.T) {
		_, err := pods.Create(ctx, pod("web", []string{"nginx"}, nil, nil), metav1.CreateOptions{})
		wantForbidden(t, err, "image policy webhook backend denied one or more images", `violates rule "no-latest"`, `"latest"`)
		if _, err := pods.Create(ctx, pod("web", []string{"nginx:1.17.1"}, nil, nil), metav1.CreateOptions{}); err != nil {
			t.Errorf("create nginx:1.17.1 = %v, want created", err)
		}
	})

	t.Run("digest policy: a resolvable tag is admitted", func(t *testing.T) {
		if _, err := pods.Create(ctx, pod("resolvable", []string{reg.Ref("app", ":v1")}, nil, nil), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create = %v, want created", err)
		}
		harness.WaitFor(t, 10*time.Second, "audit annotation with the resolved digest", func() error {
			log, _ := os.ReadFile(cp.AuditLog)
			if !strings.Contains(string(log), `imagepolicywebhook.image-policy.k8s.io/digests`) || !strings.Contains(string(log), digestA) {
				return fmt.Errorf("audit log has no digests annotation with %s", digestA)
			}
			return nil
		})
	})

	t.Run("digest policy: a missing tag is denied", func(t *testing.T) {
		_, err := pods.Create(ctx, pod("missing", []string{reg.Ref("app", ":v404")}, nil, nil), metav1.CreateOptions{})
		wantForbidden(t, err, `violates rule "resolvable"`, `tag "v404" was not found`)
	})

	t.Run("digest policy: a digest outside the allow-list is denied", func(t *testing.T) {
		_, err := pods.Create(ctx, pod("unapproved", []string{reg.Ref("approved/app", ":other")}, nil, nil), metav1.CreateOptions{})
		wantForbidden(t, err, `violates rule "approved-digests"`, digestB+" is not on the allow-list")
	})

	t.Run("digest policy: a moved tag is judged by its new digest", func(t *testing.T) {
		img := reg.Ref("approved/app", ":v1")
		if _, err := pods.Create(ctx, pod("moved-before", []string{img}, nil, map[string]string{"e2e.image-policy.k8s.io/case": "before"}), metav1.CreateOptions{}); err != nil {
			t.Fatalf("before the move: create = %v, want created", err)
		}
		reg.Push("approved/app:v1", approvedB)
		time.Sleep(1100 * time.Millisecond) // admitfn's cacheTTL in this policy
		// A distinct annotation makes a distinct review, so the apiserver's
		// own allow cache (allowTTL) does not answer for admitfn.
		_, err := pods.Create(ctx, pod("moved-after", []string{img}, nil, map[string]string{"e2e.image-policy.k8s.io/case": "after"}), metav1.CreateOptions{})
		wantForbidden(t, err, `violates rule "approved-digests"`, digestB)
	})

	t.Run("init containers are judged", func(t *testing.T) {
		_, err := pods.Create(ctx, pod("init", []string{"nginx:1.17.1"}, []string{"busybox:latest"}, nil), metav1.CreateOptions{})
		wantForbidden(t, err, `image "busybox:latest" violates rule "no-latest"`)
	})

	t.Run("ephemeral containers are judged", func(t *testing.T) {
		base, err := pods.Create(ctx, pod("debug-me", []string{"nginx:1.17.2"}, nil, nil), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		withDebug := func(image string) *corev1.Pod {
			p := base.DeepCopy()
			p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, corev1.EphemeralContainer{
				EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: image, TerminationMessagePolicy: corev1.TerminationMessageReadFile, ImagePullPolicy: corev1.PullIfNotPresent},
			})
			return p
		}
		_, err = pods.UpdateEphemeralContainers(ctx, base.Name, withDebug("busybox"), metav1.UpdateOptions{})
		wantForbidden(t, err, `image "busybox" violates rule "no-latest"`)
		if _, err := pods.UpdateEphemeralContainers(ctx, base.Name, withDebug("busybox:1.36"), metav1.UpdateOptions{}); err != nil {
			t.Errorf("ephemeral busybox:1.36 = %v, want accepted", err)
		}
	})

	t.Run("mTLS: the apiserver's certificate passes, a client without one is refused", func(t *testing.T) {
		// Every admitted pod above went through the apiserver's client
		// certificate; the same backend must refuse a bare client.
		resp, err := harness.TLSClient(t, p.CAFile).Post(backendURL, "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a client without a certificate got status %d, want 401", resp.StatusCode)
		}
		// Health probes need none: the kubelet probes without one.
		if resp, err := harness.TLSClient(t, p.CAFile).Get(fmt.Sprintf("https://127.0.0.1:%d/health/liveness", backendPort)); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("liveness without a certificate: %v, %v; want 200", resp, err)
		}
		resp, err = withCert.Get(fmt.Sprintf("https://127.0.0.1:%d/health/liveness", backendPort))
		if err != nil {
			t.Fatalf("the apiserver's certificate was refused: %v", err)
		}
		resp.Body.Close()
	})
}

// TestAdmissionConfigYAML is seed 001's setup: the AdmissionConfiguration in
// YAML, admitfn serving its embedded policy.
func TestAdmissionConfigYAML(t *testing.T) {
	env := newWebhookEnv(t, "yaml")
	env.startBackend(t, "")
	pods := env.cp.Admin.CoreV1().Pods(ns)
	ctx := context.Background()
	_, err := pods.Create(ctx, pod("web", []string{"nginx"}, nil, nil), metav1.CreateOptions{})
	wantForbidden(t, err, `image "nginx" violates rule "no-latest"`, `policy webhook backend denied`)
	if _, err := pods.Create(ctx, pod("web", []string{"nginx:1.17.1"}, nil, nil), metav1.CreateOptions{}); err != nil {
		t.Errorf("create nginx:1.17.1 = %v, want created", err)
	}
}

func pod(name string, images, initImages []string, annotations map[string]string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: img})
	}
	for i, img := range initImages {
		p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: fmt.Sprintf("init%d", i), Image: img})
	}
	return p
}

// imageVolume is an image volume named name holding ref, pulled if not
// present.
func imageVolume(name, ref string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: ref, PullPolicy: corev1.PullIfNotPresent}}}
}

func wantForbidden(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("request admitted, want Forbidden containing %q", parts)
	}
	if !apierrors.IsForbidden(err) {
		t.Fatalf("error %v is not Forbidden", err)
	}
	for _, s := range parts {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
	t.Logf("apiserver said: %v", err)
}
