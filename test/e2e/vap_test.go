//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/test/internal/harness"
)

// TestValidatingAdmissionPolicies applies what `admitfn vap` writes for
// seed 001's rule and a few more to a real kube-apiserver with no admitfn
// webhook registered and nothing serving admitfn: the apiserver alone
// refuses and warns in admitfn's words.
func TestValidatingAdmissionPolicies(t *testing.T) {
	dir := keptDir(t)
	p := newPKI(t, dir)
	cp := startControlPlane(t, dir, p, controlPlaneOptions{})
	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, []byte(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: e2e}
spec:
  rules:
  - name: no-latest
    tags: {denyLatest: true, denyUntagged: true}
  - name: no-dev-tags
    mode: warn
    tags: {deny: ["*-dev"]}
  - name: no-load-balancers
    namespaces: [e2e-*]
    serviceTypes: {deny: [LoadBalancer]}
  - name: node-restriction
    nodeRestriction: true
  - name: resolvable
    images: ["registry.example/**"]
    resolvable: true
`), 0o644)
	cmd := exec.Command(admitfnBin, "vap", "--policy", policyFile)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	manifest, err := cmd.Output()
	if err != nil {
		t.Fatalf("admitfn vap: %v\n%s", err, stderr.String())
	}
	for _, line := range []string{
		`rule "no-latest": ValidatingAdmissionPolicy admitfn-e2e-enforce`,
		`rule "no-dev-tags": ValidatingAdmissionPolicy admitfn-e2e-warn`,
		`rule "node-restriction": ValidatingAdmissionPolicy admitfn-e2e-enforce`,
		`rule "resolvable": stays with the webhook: needs registry facts (resolvable)`,
	} {
		if !strings.Contains(stderr.String(), line) {
			t.Errorf("admitfn vap's summary lacks %q:\n%s", line, stderr.String())
		}
	}
	cp.namespace(t, "e2e-a")
	admin := cp.clientFor(t, "policy-admin", "system:masters")
	if _, _, err := admin.kubectl(t, string(manifest), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply of the generated policies: %v", err)
	}
	dev := admin.Client
	ctx := context.Background()

	// A policy acts once the apiserver's informers have it, each policy
	// on its own: the first refusal of nginx says the enforce one is in
	// place, the first warning on a -dev tag the warn one.
	harness.WaitFor(t, 30*time.Second, "the generated policy to refuse nginx", func() error {
		_, err := dev.CoreV1().Pods("e2e-a").Create(ctx, pod("probe", []string{"nginx"}, nil, nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil {
			return errors.New("nginx admitted")
		}
		return nil
	})
	harness.WaitFor(t, 30*time.Second, "the generated warn policy to warn", func() error {
		_, stderr, err := admin.kubectl(t, "", "run", "probe", "--image=app:1.0-dev", "-n", "e2e-a", "--dry-run=server")
		if err != nil || !strings.Contains(stderr, "Warning:") {
			return fmt.Errorf("no warning yet (%v)", err)
		}
		return nil
	})

	t.Run("seed 001: nginx is refused in admitfn's words, nginx:1.17.1 is created", func(t *testing.T) {
		_, err := dev.CoreV1().Pods("e2e-a").Create(ctx, pod("untagged", []string{"nginx"}, nil, nil), metav1.CreateOptions{})
		wantForbidden(t, err, `ValidatingAdmissionPolicy 'admitfn-e2e-enforce' with binding 'admitfn-e2e-enforce' denied request`,
			`image "nginx" (spec.containers[0].image) violates rule "no-latest": names no tag, so the runtime pulls the mutable tag "latest"; to pass, name a version tag (nginx:<version>) or a digest (nginx@sha256:<digest>)`)
		if _, err := dev.CoreV1().Pods("e2e-a").Create(ctx, pod("tagged", []string{"nginx:1.17.1"}, nil, nil), metav1.CreateOptions{}); err != nil {
			t.Errorf("nginx:1.17.1 = %v, want created", err)
		}
	})

	t.Run("a Deployment with :latest is refused", func(t *testing.T) {
		_, err := dev.AppsV1().Deployments("e2e-a").Create(ctx, deploymentOf("web", "docker.io/library/nginx:latest"), metav1.CreateOptions{})
		wantForbidden(t, err, `image "docker.io/library/nginx:latest" (spec.template.spec.containers[0].image) violates rule "no-latest": uses the mutable tag "latest"`)
	})

	t.Run("warn mode shows up as a Warning: line for kubectl", func(t *testing.T) {
		_, stderr, err := admin.kubectl(t, "", "create", "deployment", "warned", "--image=app:1.0-dev", "-n", "e2e-a")
		if err != nil {
			t.Fatalf("create = %v, want allowed with a warning", err)
		}
		if !strings.Contains(stderr, `Warning: Validation failed for ValidatingAdmissionPolicy 'admitfn-e2e-warn' with binding 'admitfn-e2e-warn': admitfn rule "no-dev-tags": app:1.0-dev: tag "1.0-dev" is denied (pattern "*-dev")`) {
			t.Errorf("kubectl stderr %q lacks the Warning: line", stderr)
		}
	})

	t.Run("a LoadBalancer Service is refused where the rule applies", func(t *testing.T) {
		svc := func(name string) *corev1.Service {
			return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}}}
		}
		_, err := dev.CoreV1().Services("e2e-a").Create(ctx, svc("lb"), metav1.CreateOptions{})
		wantForbidden(t, err, `spec.type violates rule "no-load-balancers": Service "lb" has type LoadBalancer, which is not allowed here`)
		if _, err := dev.CoreV1().Services("default").Create(ctx, svc("lb"), metav1.CreateOptions{}); err != nil {
			t.Errorf("LoadBalancer in default = %v, want created (the rule is scoped to e2e-*)", err)
		}
	})
}

// TestStaticAdmission starts a kube-apiserver whose AdmissionConfiguration
// (admitfn admission-config --vap-static-dir --webhook-static-dir) loads
// what admitfn vap --static-dir and admitfn webhook-config --static-dir
// wrote: the policy refuses from the first request on, the webhook
// registration points at admitfn on loopback (as the static Pod serves
// it), and the API can neither delete nor shadow either.
func TestStaticAdmission(t *testing.T) {
	dir := keptDir(t)
	p := newPKI(t, dir)
	reg := registrytest.New(t)
	reg.Push("app:v1", registrytest.Image(t, nil))
	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, []byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: static}
spec:
  registry: {insecure: [%[1]q]}
  rules:
  - name: no-latest
    tags: {denyLatest: true, denyUntagged: true}
  - name: resolvable
    images: ["%[1]s/**"]
    resolvable: true
`, reg.Host())), 0o644)
	port := harness.FreePort(t)
	cert, key := p.server(t, "admitfn", "127.0.0.1")
	backend := startProc(t, dir, "admitfn", admitfnBin, "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--tls-cert", cert, "--tls-key", key, "--handlers", "validating", "--policy", policyFile)
	baseURL := fmt.Sprintf("https://127.0.0.1:%d", port)
	waitReady(t, backend, harness.TLSClient(t, p.CAFile), baseURL+"/health/readiness", 10*time.Second)

	vapDir, webhookDir := filepath.Join(dir, "static-vap"), filepath.Join(dir, "static-webhooks")
	for _, args := range [][]string{
		{"vap", "--policy", policyFile, "--static-dir", vapDir},
		{"webhook-config", "--url", baseURL, "--ca-file", p.CAFile, "--with-vap", policyFile, "--static-dir", webhookDir},
		{"admission-config", "--vap-static-dir", vapDir, "--webhook-static-dir", webhookDir, "--out", dir},
	} {
		if out, err := exec.Command(admitfnBin, args...).CombinedOutput(); err != nil {
			t.Fatalf("admitfn %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	cp := startControlPlane(t, dir, p, controlPlaneOptions{AdmissionConfig: filepath.Join(dir, "admission_config.yaml")})
	cp.namespace(t, "e2e-a")
	admin := cp.clientFor(t, "cluster-admin", "system:masters")
	ctx := context.Background()

	// No wait: ready means loaded.
	_, err := admin.Client.CoreV1().Pods("e2e-a").Create(ctx, pod("untagged", []string{"nginx"}, nil, nil), metav1.CreateOptions{})
	wantForbidden(t, err, `ValidatingAdmissionPolicy 'admitfn-static-enforce.static.k8s.io'`, `image "nginx" (spec.containers[0].image) violates rule "no-latest"`)
	if _, err := admin.Client.CoreV1().Pods("e2e-a").Create(ctx, pod("tagged", []string{"nginx:1.17.1"}, nil, nil), metav1.CreateOptions{}); err != nil {
		t.Errorf("nginx:1.17.1 = %v, want created", err)
	}
	// The registry rule is the static webhook's: a tag the registry does
	// not have is refused by admitfn, one it has is admitted.
	_, err = admin.Client.CoreV1().Pods("e2e-a").Create(ctx, pod("missing", []string{reg.Ref("app", ":v2")}, nil, nil), metav1.CreateOptions{})
	wantDenied(t, err, `admission webhook "workloads.validating.admitfn.dev" denied the request`, `violates rule "resolvable"`)
	if _, err := admin.Client.CoreV1().Pods("e2e-a").Create(ctx, pod("present", []string{reg.Ref("app", ":v1")}, nil, nil), metav1.CreateOptions{}); err != nil {
		t.Errorf("%s = %v, want created", reg.Ref("app", ":v1"), err)
	}
	// The API does not hold them at all, and refuses their names.
	for _, obj := range []string{"validatingadmissionpolicy/admitfn-static-enforce.static.k8s.io", "validatingwebhookconfiguration/admitfn-validating.static.k8s.io"} {
		_, stderr, err := admin.kubectl(t, "", "delete", obj)
		if err == nil || !strings.Contains(stderr, "NotFound") {
			t.Errorf("kubectl delete %s: %v, %q; want NotFound", obj, err, stderr)
		}
	}
	manifest, err := exec.Command(admitfnBin, "vap", "--policy", policyFile).Output()
	if err != nil {
		t.Fatal(err)
	}
	renamed := strings.ReplaceAll(string(manifest), "admitfn-static-enforce", "admitfn-static-enforce.static.k8s.io")
	if _, stderr, err := admin.kubectl(t, renamed, "apply", "-f", "-"); err == nil || !strings.Contains(stderr, "reserved for static manifest-based configurations") {
		t.Errorf("kubectl apply of a policy named like the static one: %v, %q; want it refused as reserved", err, stderr)
	}
	_, err = admin.Client.CoreV1().Pods("e2e-a").Create(ctx, pod("untagged-again", []string{"nginx"}, nil, nil), metav1.CreateOptions{})
	wantForbidden(t, err, `image "nginx" (spec.containers[0].image) violates rule "no-latest"`)
}
