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

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/test/internal/harness"
	"github.com/admitfn/admitfn/test/manifests"
)

// registerWebhooks applies both of config/webhooks with the URLs
// pointed at the local backend and its CA.
func registerWebhooks(t testing.TB, cp *controlPlane, baseURL string) {
	t.Helper()
	registerWebhooksWith(t, cp, baseURL, nil)
}

// registerWebhooksWith is registerWebhooks with a last edit of the
// configurations before they are created.
func registerWebhooksWith(t testing.TB, cp *controlPlane, baseURL string, edit func(*admissionregistrationv1.ValidatingWebhookConfiguration, *admissionregistrationv1.MutatingWebhookConfiguration)) {
	t.Helper()
	v, m, err := manifests.Webhooks(filepath.Join("..", "..", "config", "webhooks"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(cp.pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	for i := range v.Webhooks {
		u := baseURL + "/validate"
		v.Webhooks[i].ClientConfig.URL, v.Webhooks[i].ClientConfig.CABundle = &u, ca
	}
	for i := range m.Webhooks {
		u := baseURL + "/mutate"
		m.Webhooks[i].ClientConfig.URL, m.Webhooks[i].ClientConfig.CABundle = &u, ca
	}
	if edit != nil {
		edit(v, m)
	}
	ctx := context.Background()
	reg := cp.Admin.AdmissionregistrationV1()
	if _, err := reg.ValidatingWebhookConfigurations().Create(ctx, v, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.MutatingWebhookConfigurations().Create(ctx, m, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func deploymentOf(name, image string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
			},
		},
	}
}

// TestValidatingAndMutatingWebhooks registers config/'s webhook
// configurations with kube-apiserver and admitfn serving /validate and
// /mutate behind them.
func TestValidatingAndMutatingWebhooks(t *testing.T) {
	dir := keptDir(t)
	p := newPKI(t, dir)
	cp := startControlPlane(t, dir, p, controlPlaneOptions{})
	env := &webhookEnv{dir: dir, pki: p, cp: cp, backendPort: harness.FreePort(t)}
	env.apiserverCert, env.apiserverKey = p.client(t, "apiserver-to-admitfn", "kube-apiserver-webhook")

	reg := registrytest.New(t)
	digest := reg.Push("app:v1", registrytest.Image(t, nil))
	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, []byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: e2e-webhooks}
spec:
  registry: {insecure: [%[1]q]}
  mutation: {namespaces: [pinned], pinDigests: true}
  workloads:
  - {apiGroup: example.admitfn.dev, kind: Runner, podTemplate: spec.template}
  rules:
  - name: no-latest
    tags: {denyLatest: true, denyUntagged: true}
  - name: node-restriction
    nodeRestriction: true
  - name: no-load-balancers
    namespaces: [e2e-*]
    serviceTypes: {deny: [LoadBalancer]}
  - name: no-dev-tags
    mode: warn
    tags: {deny: ["*-dev"]}
  - name: resolvable
    images: ["%[1]s/**"]
    resolvable: true
`, reg.Host())), 0o644)
	// The apiserver verifies admitfn's serving certificate against caBundle;
	// no client certificate is configured for webhooks here.
	backendCert, backendKey := p.server(t, "admitfn", "127.0.0.1")
	backend := startProc(t, dir, "admitfn", admitfnBin, "serve",
		"--listen", fmt.Sprintf("127.0.0.1:%d", env.backendPort),
		"--tls-cert", backendCert, "--tls-key", backendKey,
		"--handlers", "validating,mutating", "--policy", policyFile)
	baseURL := fmt.Sprintf("https://127.0.0.1:%d", env.backendPort)
	waitReady(t, backend, harness.TLSClient(t, p.CAFile), baseURL+"/health/readiness", 10*time.Second)
	// A kind the policy declares needs a rule of its own, as README says.
	registerWebhooksWith(t, cp, baseURL, func(v *admissionregistrationv1.ValidatingWebhookConfiguration, _ *admissionregistrationv1.MutatingWebhookConfiguration) {
		v.Webhooks[0].Rules = append(v.Webhooks[0].Rules, admissionregistrationv1.RuleWithOperations{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{"example.admitfn.dev"}, APIVersions: []string{"v1"}, Resources: []string{"runners"}},
		})
	})
	for _, ns := range []string{"e2e-a", "pinned"} {
		cp.namespace(t, ns)
	}
	developer := cp.clientFor(t, "developer", "system:masters")
	dev := developer.Client
	ctx := context.Background()

	t.Run("a Deployment with :latest is rejected at create", func(t *testing.T) {
		_, err := dev.AppsV1().Deployments("e2e-a").Create(ctx, deploymentOf("web", "nginx:latest"), metav1.CreateOptions{})
		wantDenied(t, err, `admission webhook "workloads.validating.admitfn.dev" denied the request`,
			`image "nginx:latest" (spec.template.spec.containers[0].image) violates rule "no-latest"`)
	})

	t.Run("kubectl --dry-run=server is judged and leaves nothing behind", func(t *testing.T) {
		manifest := func(image string) string {
			return fmt.Sprintf(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"dry","namespace":"e2e-a"},
"spec":{"selector":{"matchLabels":{"app":"dry"}},"template":{"metadata":{"labels":{"app":"dry"}},"spec":{"containers":[{"name":"app","image":%q}]}}}}`, image)
		}
		_, stderr, err := developer.kubectl(t, manifest("nginx"), "apply", "--dry-run=server", "-f", "-")
		if err == nil || !strings.Contains(stderr, `image "nginx" (spec.template.spec.containers[0].image) violates rule "no-latest"`) {
			t.Errorf("dry run of nginx: err %v, stderr %q; want a denial naming the rule", err, stderr)
		}
		stdout, _, err := developer.kubectl(t, manifest("nginx:1.17.1"), "apply", "--dry-run=server", "-f", "-")
		if err != nil || !strings.Contains(stdout, "deployment.apps/dry created (server dry run)") {
			t.Errorf("dry run of nginx:1.17.1: err %v, stdout %q", err, stdout)
		}
		if _, err := dev.AppsV1().Deployments("e2e-a").Get(ctx, "dry", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("after the dry runs, Get = %v, want NotFound", err)
		}
	})

	t.Run("warn mode shows up as Warning: lines for kubectl", func(t *testing.T) {
		_, stderr, err := developer.kubectl(t, "", "create", "deployment", "warned", "--image=app:1.0-dev", "-n", "e2e-a")
		if err != nil {
			t.Fatalf("create = %v, want allowed with a warning", err)
		}
		if !strings.Contains(stderr, `Warning: admitfn rule "no-dev-tags": app:1.0-dev: tag "1.0-dev" is denied`) {
			t.Errorf("kubectl stderr %q lacks the Warning: line", stderr)
		}
	})

	t.Run("an ephemeral container added through the subresource is judged", func(t *testing.T) {
		base, err := dev.CoreV1().Pods("e2e-a").Create(ctx, pod("debug-me", []string{"nginx:1.17.1"}, nil, nil), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		add := func(image string) error {
			p := base.DeepCopy()
			p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: "debug", Image: image, TerminationMessagePolicy: corev1.TerminationMessageReadFile, ImagePullPolicy: corev1.PullIfNotPresent}})
			_, err := dev.CoreV1().Pods("e2e-a").UpdateEphemeralContainers(ctx, base.Name, p, metav1.UpdateOptions{})
			return err
		}
		wantDenied(t, add("busybox"), `image "busybox" (spec.ephemeralContainers[0].image) violates rule "no-latest"`)
		if err := add("busybox:1.36"); err != nil {
			t.Errorf("ephemeral busybox:1.36 = %v, want accepted", err)
		}
	})

	t.Run("the mutating webhook pins the resolved digest", func(t *testing.T) {
		img := reg.Ref("app", ":v1")
		if _, err := dev.CoreV1().Pods("pinned").Create(ctx, pod("pinned", []string{img}, nil, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		stdout, _, err := developer.kubectl(t, "", "get", "pod", "pinned", "-n", "pinned", "-o", "yaml")
		if err != nil {
			t.Fatal(err)
		}
		if want := "image: " + img + "@" + digest; !strings.Contains(stdout, want) {
			t.Errorf("kubectl get pod -o yaml lacks %q", want)
		}
		// Outside the opted-in namespaces nothing is rewritten.
		if _, err := dev.CoreV1().Pods("e2e-a").Create(ctx, pod("unpinned", []string{img}, nil, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if got, _ := dev.CoreV1().Pods("e2e-a").Get(ctx, "unpinned", metav1.GetOptions{}); got.Spec.Containers[0].Image != img {
			t.Errorf("image outside the mutation namespaces became %q", got.Spec.Containers[0].Image)
		}
	})

	t.Run("image volumes are judged and pinned", func(t *testing.T) {
		withVolume := func(name, image string) *corev1.Pod {
			p := pod(name, []string{"nginx:1.17.1"}, nil, nil)
			p.Spec.Volumes = []corev1.Volume{imageVolume("tools", image)}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "tools", MountPath: "/tools"}}
			return p
		}
		_, err := dev.CoreV1().Pods("e2e-a").Create(ctx, withVolume("volume-latest", "busybox:latest"), metav1.CreateOptions{})
		wantDenied(t, err, `image "busybox:latest" (spec.volumes[0].image.reference) violates rule "no-latest"`)
		img := reg.Ref("app", ":v1")
		if _, err := dev.CoreV1().Pods("pinned").Create(ctx, withVolume("volume-pinned", img), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		got, err := dev.CoreV1().Pods("pinned").Get(ctx, "volume-pinned", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ref := got.Spec.Volumes[0].Image.Reference; ref != img+"@"+digest {
			t.Errorf("image volume reference %q, want it pinned to %s@%s", ref, img, digest)
		}
	})

	t.Run("Knative Services are judged like Deployments", func(t *testing.T) {
		if _, _, err := developer.kubectl(t, "", "apply", "-f", knativeCRDs(t)); err != nil {
			t.Fatalf("applying Knative Serving's CRDs: %v", err)
		}
		developer.waitEstablished(t, "services.serving.knative.dev")
		ksvc := func(name, image string) string {
			return fmt.Sprintf(`{"apiVersion":"serving.knative.dev/v1","kind":"Service","metadata":{"name":%q,"namespace":"e2e-a"},
"spec":{"template":{"spec":{"containers":[{"image":%q}]}}}}`, name, image)
		}
		_, stderr, err := developer.kubectl(t, ksvc("hello", "nginx:latest"), "apply", "-f", "-")
		if err == nil || !strings.Contains(stderr, `image "nginx:latest" (spec.template.spec.containers[0].image) violates rule "no-latest"`) {
			t.Errorf("ksvc with nginx:latest: err %v, stderr %q; want a denial naming the field", err, stderr)
		}
		if _, _, err := developer.kubectl(t, ksvc("hello", "nginx:1.17.1"), "apply", "-f", "-"); err != nil {
			t.Errorf("ksvc with nginx:1.17.1: %v, want created", err)
		}
	})

	t.Run("a kind declared in the policy is judged", func(t *testing.T) {
		crd := `{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"runners.example.admitfn.dev"},
"spec":{"group":"example.admitfn.dev","scope":"Namespaced","names":{"plural":"runners","singular":"runner","kind":"Runner"},
"versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}]}}`
		if _, _, err := developer.kubectl(t, crd, "apply", "-f", "-"); err != nil {
			t.Fatal(err)
		}
		developer.waitEstablished(t, "runners.example.admitfn.dev")
		runner := func(name, image string) string {
			return fmt.Sprintf(`{"apiVersion":"example.admitfn.dev/v1","kind":"Runner","metadata":{"name":%q,"namespace":"e2e-a"},
"spec":{"template":{"spec":{"containers":[{"name":"r","image":%q}]}}}}`, name, image)
		}
		_, stderr, err := developer.kubectl(t, runner("r1", "busybox"), "apply", "-f", "-")
		if err == nil || !strings.Contains(stderr, `image "busybox" (spec.template.spec.containers[0].image) violates rule "no-latest"`) {
			t.Errorf("Runner with busybox: err %v, stderr %q; want a denial naming the field", err, stderr)
		}
		if _, _, err := developer.kubectl(t, runner("r1", "busybox:1.36"), "apply", "-f", "-"); err != nil {
			t.Errorf("Runner with busybox:1.36: %v, want created", err)
		}
	})

	t.Run("a LoadBalancer Service is refused", func(t *testing.T) {
		svc := func(name string, ty corev1.ServiceType) *corev1.Service {
			return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Type: ty, Ports: []corev1.ServicePort{{Port: 80}}}}
		}
		_, err := dev.CoreV1().Services("e2e-a").Create(ctx, svc("lb", corev1.ServiceTypeLoadBalancer), metav1.CreateOptions{})
		wantDenied(t, err, `spec.type violates rule "no-load-balancers": Service "lb" has type LoadBalancer`)
		if _, err := dev.CoreV1().Services("e2e-a").Create(ctx, svc("internal", corev1.ServiceTypeClusterIP), metav1.CreateOptions{}); err != nil {
			t.Errorf("ClusterIP Service = %v, want created", err)
		}
	})
}

// TestNodeRestrictionDifferential makes kubelet requests on Nodes — seed
// 002's, and one for each other rule the plugin has for Nodes that a
// webhook can see (kubernetes.io and k8s.io labels, kubelet labels, taints,
// owner references, registering with labels) — once against kube-apiserver's
// own NodeRestriction plugin and once against admitfn's rule alone, and
// expects the same answers.
func TestNodeRestrictionDifferential(t *testing.T) {
	type outcome struct {
		Request string
		Allowed bool
	}
	// run makes the requests with the plugin, with admitfn's webhook, or
	// with admitfn vap's policies (no webhook) deciding.
	run := func(t *testing.T, judge string) []outcome {
		dir := keptDir(t)
		p := newPKI(t, dir)
		opts := controlPlaneOptions{AdmissionPlugins: []string{"NodeRestriction"}}
		if judge != "plugin" {
			opts = controlPlaneOptions{}
		}
		cp := startControlPlane(t, dir, p, opts)
		if judge == "webhook" {
			port := harness.FreePort(t)
			cert, key := p.server(t, "admitfn", "127.0.0.1")
			backend := startProc(t, dir, "admitfn", admitfnBin, "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port),
				"--tls-cert", cert, "--tls-key", key, "--handlers", "validating")
			baseURL := fmt.Sprintf("https://127.0.0.1:%d", port)
			waitReady(t, backend, harness.TLSClient(t, p.CAFile), baseURL+"/health/readiness", 10*time.Second)
			registerWebhooks(t, cp, baseURL)
		}
		ctx := context.Background()
		for _, name := range []string{"controlplane", "node01"} {
			if _, err := cp.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		kubelet := cp.clientFor(t, "system:node:node01", "system:nodes").Client
		if judge == "vap" {
			manifest, err := exec.Command(admitfnBin, "vap").Output()
			if err != nil {
				t.Fatal(err)
			}
			admin := cp.clientFor(t, "policy-admin", "system:masters")
			if _, _, err := admin.kubectl(t, string(manifest), "apply", "-f", "-"); err != nil {
				t.Fatal(err)
			}
			harness.WaitFor(t, 30*time.Second, "the generated policy to judge kubelets", func() error {
				_, err := kubelet.CoreV1().Nodes().Patch(ctx, "node01", types.MergePatchType, []byte(`{"metadata":{"labels":{"node-restriction.kubernetes.io/probe":"1"}}}`), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
				if err == nil {
					return errors.New("a restricted label was accepted")
				}
				return nil
			})
		}
		label := func(c *kubernetes.Clientset, node, key, value string) error {
			patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, key, value)
			_, err := c.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
			return err
		}
		var out []outcome
		record := func(what string, err error) {
			if err != nil && !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
				t.Fatalf("%s: unexpected error %v", what, err)
			}
			t.Logf("%s: %v", what, err)
			out = append(out, outcome{what, err == nil})
		}
		for _, r := range []struct{ node, key, value string }{
			// seed 002
			{"controlplane", "killercoda/one", "123"},
			{"node01", "node-restriction.kubernetes.io/one", "123"},
			{"node01", "killercoda/two", "1"},
			// the plugin's other label rules
			{"node01", "kubernetes.io/custom", "1"},
			{"node01", "example.k8s.io/x", "1"},
			{"node01", "evil-node-restriction.kubernetes.io/x", "1"},
			{"node01", "topology.kubernetes.io/zone", "z1"},
			{"node01", "kubelet.kubernetes.io/x", "1"},
			{"node01", "a.node.kubernetes.io/y", "2"},
		} {
			record(fmt.Sprintf("as node01: label %s %s=%s", r.node, r.key, r.value), label(kubelet, r.node, r.key, r.value))
		}
		patch := func(c *kubernetes.Clientset, node, patch string) error {
			_, err := c.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
			return err
		}
		record("as node01: taint node01", patch(kubelet, "node01", `{"spec":{"taints":[{"key":"dedicated","value":"x","effect":"NoSchedule"}]}}`))
		record("as node01: set ownerReferences of node01", patch(kubelet, "node01",
			`{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"Namespace","name":"default","uid":"00000000-0000-0000-0000-000000000001"}]}}`))
		register := func(name string, labels map[string]string) error {
			c := cp.clientFor(t, "system:node:"+name, "system:nodes").Client
			_, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
			return err
		}
		record("as node03: register with kubernetes.io/custom", register("node03", map[string]string{"kubernetes.io/custom": "1"}))
		record("as node04: register with topology.kubernetes.io/zone", register("node04", map[string]string{"topology.kubernetes.io/zone": "z1"}))
		// RBAC refuses this one before admission here (no binding gives
		// kubelets delete on nodes); the rule's DELETE case is unit-tested.
		record("as node01: delete node controlplane", kubelet.CoreV1().Nodes().Delete(ctx, "controlplane", metav1.DeleteOptions{}))
		// An administrator may still set the restricted label.
		if err := label(cp.Admin, "node01", "node-restriction.kubernetes.io/one", "123"); err != nil {
			t.Errorf("administrator setting a restricted label: %v", err)
		}
		return out
	}
	var plugin, admitfn, policies []outcome
	t.Run("kube-apiserver NodeRestriction", func(t *testing.T) { plugin = run(t, "plugin") })
	t.Run("admitfn node-restriction rule", func(t *testing.T) { admitfn = run(t, "webhook") })
	t.Run("admitfn vap's node-restriction policy", func(t *testing.T) { policies = run(t, "vap") })
	want := []outcome{
		{"as node01: label controlplane killercoda/one=123", false},
		{"as node01: label node01 node-restriction.kubernetes.io/one=123", false},
		{"as node01: label node01 killercoda/two=1", true},
	}
	if d := cmp.Diff(want, plugin[:len(want)]); d != "" {
		t.Errorf("NodeRestriction plugin did not behave as seed 002 says (-want +got):\n%s", d)
	}
	if d := cmp.Diff(plugin, admitfn); d != "" {
		t.Errorf("admitfn differs from the NodeRestriction plugin (-plugin +admitfn):\n%s", d)
	}
	if d := cmp.Diff(plugin, policies); d != "" {
		t.Errorf("admitfn vap's policy differs from the NodeRestriction plugin (-plugin +policy):\n%s", d)
	}
}

func wantDenied(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("request admitted, want a denial containing %q", parts)
	}
	for _, s := range parts {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
	t.Logf("apiserver said: %v", err)
}
