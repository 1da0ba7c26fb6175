//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/admitfn/admitfn/test/internal/harness"
	"github.com/admitfn/admitfn/test/manifests"
)

// The scale-from-zero scenarios: the scaler (scaler_test.go) stands in for
// Knative's activator, autoscaler and ingress in front of admitfn, and
// every Pod it or the test creates goes through the real kube-apiserver.

// writeAdmissionConfig runs admitfn admission-config for url (the user's
// path) and returns the AdmissionConfiguration file.
func writeAdmissionConfig(t testing.TB, dir string, p *pki, url string, extra ...string) string {
	t.Helper()
	out := filepath.Join(dir, "admission")
	args := append([]string{"admission-config", "--url", url, "--ca-file", p.CAFile,
		"--allow-ttl", "50", "--deny-ttl", "50", "--retry-backoff", "100", "--format", "yaml", "--out", out}, extra...)
	if b, err := exec.Command(admitfnBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("admitfn admission-config: %v\n%s", err, b)
	}
	return filepath.Join(out, "admission_config.yaml")
}

// TestScaleFromZeroLockout reproduces, with the settings admitfn shipped
// before, how a fail-closed backend that scales to zero locks the cluster.
// Each subtest prints the scaler's log: the circle as it happened.
func TestScaleFromZeroLockout(t *testing.T) {
	ctx := context.Background()

	t.Run("ImagePolicyWebhook at zero, defaultAllow false: its own wake-up pod is refused, and so is every pod", func(t *testing.T) {
		dir := keptDir(t)
		p := newPKI(t, dir)
		s := newScaler(t, dir, p, scalerOptions{Name: "image-policy", Image: admitfnImage,
			Args: []string{"serve", "--handlers=imagepolicy"}, Hold: 3 * time.Second, Idle: time.Minute})
		cp := startControlPlane(t, dir, p, controlPlaneOptions{
			AdmissionPlugins: []string{"ImagePolicyWebhook"},
			AdmissionConfig:  writeAdmissionConfig(t, dir, p, s.URL()+"/imagepolicy", "--default-allow=false"),
		})
		s.attach(cp)
		cp.namespace(t, "team-a")

		for i := 1; i <= 2; i++ {
			_, err := cp.Admin.CoreV1().Pods("team-a").Create(ctx, pod(fmt.Sprintf("app-%d", i), []string{"nginx:1.17.1"}, nil, nil), metav1.CreateOptions{})
			if err == nil || !strings.Contains(err.Error(), "forbidden") {
				t.Fatalf("workload pod %d: %v; want it forbidden (the backend is at zero and cannot wake)", i, err)
			}
			t.Logf("workload pod %d: %v", i, err)
		}
		harness.WaitFor(t, 30*time.Second, "the scaler to give up", func() error {
			if !s.settled() {
				return fmt.Errorf("a scale-up is still under way")
			}
			return nil
		})
		wakes, creates, refusals, starts := s.counts()
		t.Logf("the circle: %d wake-ups, %d Pod creates for image-policy, %d refused, %d started", wakes, creates, refusals, starts)
		if wakes < 1 || creates < 2 || refusals != creates || starts != 0 || !s.atZero() {
			t.Errorf("wakes %d, creates %d, refusals %d, starts %d; want every Pod create refused (retries included) and image-policy never started", wakes, creates, refusals, starts)
		}
		s.mu.Lock()
		first := s.refusals[0]
		s.mu.Unlock()
		if !strings.Contains(first, `pods "image-policy-00001" is forbidden`) {
			t.Errorf("the wake-up pod was refused with %q, want the ImagePolicyWebhook plugin's refusal of it", first)
		}
	})

	t.Run("ImagePolicyWebhook at min-scale: the ingress's pods are refused while it is gone", func(t *testing.T) {
		// What config/ ships for the Knative Service image-policy keeps
		// pods, but the apiserver still reaches them through the ingress,
		// whose pods the plugin judges: this is why admission-config warns
		// and README recommends the static pod for a fail-closed plugin.
		dir := keptDir(t)
		p := newPKI(t, dir)
		s := newScaler(t, dir, p, scalerOptions{Name: "image-policy", Image: admitfnImage,
			Args: []string{"serve", "--handlers=imagepolicy"}, Hold: 3 * time.Second, Idle: time.Minute, MinScale: 1})
		// allowTTL 1 s: the apiserver's allow cache hides the circle only
		// until the last admitted ingress pod's answer expires (at most
		// 30 minutes in a real configuration).
		cp := startControlPlane(t, dir, p, controlPlaneOptions{
			AdmissionPlugins: []string{"ImagePolicyWebhook"},
			AdmissionConfig:  writeAdmissionConfig(t, dir, p, s.URL()+"/imagepolicy", "--default-allow=false", "--allow-ttl", "1"),
		})
		cp.namespace(t, ingressPod().Namespace)
		s.attach(cp)
		if err := s.restart(ingressPod(), 1); err != nil {
			t.Fatalf("with the ingress running, an ingress pod: %v; want admitted", err)
		}
		s.takeDown(ingressPod())
		time.Sleep(1100 * time.Millisecond) // past allowTTL
		for attempt := 2; attempt <= 3; attempt++ {
			if err := s.restart(ingressPod(), attempt); err == nil || !strings.Contains(err.Error(), "forbidden") {
				t.Fatalf("ingress pod while no ingress runs: %v; want it forbidden", err)
			}
		}
		if _, _, _, starts := s.counts(); starts != 1 {
			t.Errorf("%d starts, want the one pod deployed before, running throughout", starts)
		}
	})

	t.Run("validating at zero, old namespaceSelector: the activator cannot come back", func(t *testing.T) {
		dir := keptDir(t)
		p := newPKI(t, dir)
		s := newScaler(t, dir, p, scalerOptions{Name: "validating", Image: admitfnImage,
			Args: []string{"serve", "--handlers=validating,mutating"}, Hold: 3 * time.Second, Idle: time.Minute})
		cp := startControlPlane(t, dir, p, controlPlaneOptions{})
		s.attach(cp)
		// The selector config/webhooks had before: only kube-system and
		// admitfn left out.
		registerWebhooksWith(t, cp, s.URL(), func(v *admissionregistrationv1.ValidatingWebhookConfiguration, m *admissionregistrationv1.MutatingWebhookConfiguration) {
			old := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", "admitfn"}}}}
			for i := range v.Webhooks {
				if v.Webhooks[i].NamespaceSelector != nil {
					v.Webhooks[i].NamespaceSelector = old
				}
			}
			for i := range m.Webhooks {
				m.Webhooks[i].NamespaceSelector = old
			}
		})
		cp.namespace(t, activatorPod().Namespace)
		cp.namespace(t, "team-a")
		s.takeDown(activatorPod())
		for attempt := 1; attempt <= 2; attempt++ {
			err := s.restart(activatorPod(), attempt)
			if err == nil || !strings.Contains(err.Error(), `failed calling webhook "`) || !strings.Contains(err.Error(), `.admitfn.dev"`) {
				t.Fatalf("activator pod while validating is at zero: %v; want it refused for want of admitfn's webhook", err)
			}
		}
		_, err := cp.Admin.CoreV1().Pods("team-a").Create(ctx, pod("app", []string{"nginx:1.17.1"}, nil, nil), metav1.CreateOptions{})
		if err == nil {
			t.Fatal("a workload pod was admitted although validating cannot be reached")
		}
		if wakes, _, _, starts := s.counts(); wakes != 0 || starts != 0 {
			t.Errorf("wakes %d, starts %d: no request should have reached validating", wakes, starts)
		}
	})
}

// staticBackend runs the ImagePolicyWebhook backend as `admitfn static-pod`
// writes it: the manifest's own arguments, its host folder a test folder.
type staticBackend struct {
	t    testing.TB
	dir  string
	args []string
	url  string
	p    *proc
}

func newStaticBackend(t testing.TB, dir string, p *pki) *staticBackend {
	t.Helper()
	hostDir := filepath.Join(dir, "static")
	os.MkdirAll(hostDir, 0o755)
	port := harness.FreePort(t)
	out, err := exec.Command(admitfnBin, "static-pod", "--image", admitfnImage, "--port", fmt.Sprint(port),
		"--host-dir", "/etc/kubernetes/admitfn", "--client-ca-file", "client-ca.crt", "--policy-file=").Output()
	if err != nil {
		t.Fatalf("admitfn static-pod: %v", err)
	}
	var manifest corev1.Pod
	if err := yaml.UnmarshalStrict(out, &manifest); err != nil {
		t.Fatalf("admitfn static-pod wrote what is not a Pod: %v\n%s", err, out)
	}
	// The files the manifest's hostPath folder holds on a node.
	certFile, keyFile := p.server(t, "static", "127.0.0.1")
	for src, dst := range map[string]string{certFile: "tls.crt", keyFile: "tls.key", p.CAFile: "client-ca.crt"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(hostDir, dst), b, 0o600)
	}
	mount := manifest.Spec.Containers[0].VolumeMounts[0].MountPath
	var args []string
	for _, a := range manifest.Spec.Containers[0].Args {
		args = append(args, strings.ReplaceAll(a, mount, hostDir))
	}
	b := &staticBackend{t: t, dir: dir, args: args, url: fmt.Sprintf("https://127.0.0.1:%d", port)}
	t.Logf("static pod's arguments, on this machine: %s", strings.Join(args, " "))
	return b
}

// start is the kubelet starting the static pod's container: no API call.
func (b *staticBackend) start(p *pki) {
	b.t.Helper()
	b.p = startProc(b.t, b.dir, "static-image-policy", admitfnBin, b.args...)
	waitReady(b.t, b.p, harness.TLSClient(b.t, p.CAFile, b.clientPair(p)), b.url+"/health/readiness", 10*time.Second)
}

func (b *staticBackend) clientPair(p *pki) tls.Certificate {
	b.t.Helper()
	certFile, keyFile := p.client(b.t, "apiserver-to-static", "kube-apiserver")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		b.t.Fatal(err)
	}
	return pair
}

// TestScaleFromZeroShipped proves the topology config/ and README ship: the
// ImagePolicyWebhook backend as a static pod on loopback (fail closed), the
// validating webhook as a Service that scales to zero behind the scaler,
// registered with config/webhooks as they are.
func TestScaleFromZeroShipped(t *testing.T) {
	ctx := context.Background()
	dir := keptDir(t)
	p := newPKI(t, dir)
	static := newStaticBackend(t, dir, p)
	static.start(p)
	apiserverCert, apiserverKey := p.client(t, "apiserver-to-admitfn", "kube-apiserver")
	// The webhook's timeoutSeconds is 20: the scaler holds a request at
	// most 15 s, as an activator that gives up first.
	s := newScaler(t, dir, p, scalerOptions{Name: "validating", Image: admitfnImage,
		Args: []string{"serve", "--handlers=validating,mutating"}, Hold: 15 * time.Second, Idle: 3 * time.Second})
	cp := startControlPlane(t, dir, p, controlPlaneOptions{
		AdmissionPlugins: []string{"ImagePolicyWebhook"},
		AdmissionConfig: writeAdmissionConfig(t, dir, p, static.url+"/imagepolicy", "--default-allow=false",
			"--client-cert", apiserverCert, "--client-key", apiserverKey),
	})
	s.attach(cp)
	registerWebhooks(t, cp, s.URL())
	for _, ns := range append(manifests.DataPathNamespaces(), "team-a") {
		cp.namespace(t, ns)
	}
	if _, err := cp.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: "opted-out", Labels: map[string]string{manifests.ExcludeLabel: "true"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cp.namespace(t, "opted-out")
	pods := cp.Admin.CoreV1().Pods

	t.Run("pods on the data path are created while validating is at zero, without waking it", func(t *testing.T) {
		for _, ns := range append(manifests.DataPathNamespaces(), "opted-out") {
			if _, err := pods(ns).Create(ctx, pod("restarted", []string{"registry.example/component:v1.0"}, nil, nil), metav1.CreateOptions{}); err != nil {
				t.Errorf("pod in %s while validating is at zero: %v", ns, err)
			}
		}
		if wakes, _, _, _ := s.counts(); wakes != 0 {
			t.Errorf("validating was woken %d times, want 0: those namespaces must not wait on it", wakes)
		}
	})

	t.Run("the first workload pod after idle waits for validating's cold start", func(t *testing.T) {
		began := time.Now()
		if _, err := pods("team-a").Create(ctx, pod("first", []string{"nginx:1.17.1"}, nil, nil), metav1.CreateOptions{}); err != nil {
			t.Fatalf("first pod: %v; want admitted once validating has started", err)
		}
		wait := time.Since(began)
		wakes, creates, refusals, starts := s.counts()
		if wakes != 1 || creates != 1 || refusals != 0 || starts != 1 {
			t.Errorf("wakes %d, creates %d, refusals %d, starts %d; want one wake-up whose Pod was admitted", wakes, creates, refusals, starts)
		}
		t.Logf("first pod after idle: admitted in %s (the webhook's timeoutSeconds is 20 s; the wake-up Pod passed ImagePolicyWebhook on the static backend)", wait.Round(time.Millisecond))
		// The answer is validating's own (ImagePolicyWebhook judges pods
		// only, and would answer first for a pod).
		_, err := cp.Admin.AppsV1().Deployments("team-a").Create(ctx, deploymentOf("web", "nginx"), metav1.CreateOptions{})
		wantDenied(t, err, `admission webhook "workloads.validating.admitfn.dev" denied the request`, `violates rule "no-latest"`)
	})

	t.Run("validating scales back to zero after idle and wakes again", func(t *testing.T) {
		harness.WaitFor(t, 30*time.Second, "validating at zero", func() error {
			if !s.atZero() {
				return fmt.Errorf("still up")
			}
			return nil
		})
		before, _, _, _ := s.counts()
		began := time.Now()
		if _, err := pods("team-a").Create(ctx, pod("second", []string{"nginx:1.17.1"}, nil, nil), metav1.CreateOptions{}); err != nil {
			t.Fatalf("pod after scale-to-zero: %v", err)
		}
		t.Logf("pod after the second idle: admitted in %s", time.Since(began).Round(time.Millisecond))
		if wakes, _, _, _ := s.counts(); wakes != before+1 {
			t.Errorf("wakes %d, want %d", wakes, before+1)
		}
	})

	t.Run("the ingress and the activator restart while validating is at zero", func(t *testing.T) {
		harness.WaitFor(t, 30*time.Second, "validating at zero", func() error {
			if !s.atZero() {
				return fmt.Errorf("still up")
			}
			return nil
		})
		s.takeDown(ingressPod())
		s.takeDown(activatorPod())
		for _, c := range []dataPathPod{activatorPod(), ingressPod()} {
			if err := s.restart(c, 1); err != nil {
				t.Fatalf("%s pod while it is gone and validating is at zero: %v; want admitted", c.Component, err)
			}
		}
		if _, err := pods("team-a").Create(ctx, pod("after-restart", []string{"nginx:1.17.1"}, nil, nil), metav1.CreateOptions{}); err != nil {
			t.Errorf("workload pod once the data path is back: %v", err)
		}
	})

	t.Run("the static ImagePolicyWebhook backend restarts without asking anyone", func(t *testing.T) {
		// Images not asked about before, so the apiserver's allow cache
		// (allowTTL) cannot answer for the backend.
		static.p.stop()
		_, err := pods("kube-system").Create(ctx, pod("while-down", []string{"registry.example/component:v2.0"}, nil, nil), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "forbidden") {
			t.Fatalf("pod while the backend is down: %v; want forbidden (fail closed)", err)
		}
		static.start(p) // the kubelet restarting the container: no apiserver call
		if _, err := pods("kube-system").Create(ctx, pod("after-static-restart", []string{"registry.example/component:v2.0"}, nil, nil), metav1.CreateOptions{}); err != nil {
			t.Errorf("pod after the static backend restarted: %v", err)
		}
	})
}
