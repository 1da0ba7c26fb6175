//go:build e2e && cluster

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/admitfn/admitfn/test/internal/harness"
)

// privateRule is the rule over the cluster's private registry. It warns
// rather than denies, so that every pod reaches the kubelet.
const privateRule = "private-readable"

// usePrivateRule puts the shipped policy, plus a rule that the private
// registry's images be resolvable, in admitfn's ConfigMap. Pods started
// after it read the new policy.
func (c *cluster) usePrivateRule(t testing.TB) {
	t.Helper()
	policy := fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: default}
spec:
  registry: {insecure: [%[1]q], timeout: 3s}
  rules:
  - name: no-latest
    tags: {denyUntagged: true, denyLatest: true}
  - name: node-restriction
    nodeRestriction: true
  - name: %[2]s
    mode: warn
    images: ["%[1]s/**"]
    resolvable: true
  # The storms' registry outage (cluster_storm_test.go): one rule failing
  # closed, one failing open.
  - name: outage-deny
    images: ["%[1]s/outage/deny"]
    resolvable: true
  - name: outage-allow
    images: ["%[1]s/outage/allow"]
    resolvable: true
    onRegistryError: allow
`, c.private.Host(), privateRule)
	patch, err := json.Marshal(map[string]any{"data": map[string]string{"policy.yaml": policy}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.admin.kubectl(t, "", "patch", "configmap", "admitfn-policy", "-n", "admitfn", "--type=merge", "-p", string(patch)); err != nil {
		t.Fatal(err)
	}
}

// warnings collects the warnings the apiserver returns to a client.
type warnings struct {
	mu   sync.Mutex
	seen []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.seen
	w.seen = nil
	return out
}

// kubeletOracle creates pods of the private image with different
// credentials, each as it would be in a real cluster, and holds admitfn's
// verdict (validating's warning, from admitfn running in its Knative pod
// and reading Secrets with config/'s RBAC) to the real kubelet's pull of
// the same pod: allowed exactly when the kubelet could pull it.
func (c *cluster) kubeletOracle(t *testing.T) {
	ctx := context.Background()
	host := c.private.Host()
	wrong := c.privateCreds
	wrong.Password = "not-" + wrong.Password
	c.namespace(t, "team-b")
	for _, s := range []struct {
		ns     string
		secret *corev1.Secret
	}{
		{"team-a", dockerConfigSecret("regcred", host, c.privateCreds)},
		{"team-a", dockerConfigSecret("wrong", host, wrong)},
	} {
		if _, err := c.Admin.CoreV1().Secrets(s.ns).Create(ctx, s.secret, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "builder"}, ImagePullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}}}
	if _, err := c.Admin.CoreV1().ServiceAccounts("team-a").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := &warnings{}
	cfg := rest.CopyConfig(c.AdminRest)
	cfg.WarningHandler = w
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	image := c.private.Ref("private/pause", ":v1")
	tests := []struct {
		name           string
		ns             string
		serviceAccount string
		secrets        []string
		pullable       bool
	}{
		{"the pod's own pull secret", "team-a", "", []string{"regcred"}, true},
		{"right after, another namespace's pod with none", "team-b", "", nil, false},
		{"another namespace's pod naming team-a's secret", "team-b", "", []string{"regcred"}, false},
		{"the secret through the pod's serviceaccount", "team-a", "builder", nil, true},
		{"a wrong password", "team-a", "", []string{"wrong"}, false},
		{"a wrong password, then the right one", "team-a", "", []string{"wrong", "regcred"}, true},
	}
	var created []*corev1.Pod
	defer func() {
		zero := int64(0)
		for _, p := range created {
			c.Admin.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		}
	}()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pod(fmt.Sprintf("pull-%d", i), []string{image}, nil, nil)
			// Always: the node has the image once the first case pulled
			// it, and the kubelet must ask the registry with this pod's
			// credentials each time.
			p.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways
			p.Spec.ServiceAccountName = tt.serviceAccount
			zero := int64(0)
			p.Spec.TerminationGracePeriodSeconds = &zero
			for _, s := range tt.secrets {
				p.Spec.ImagePullSecrets = append(p.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
			}
			w.take()
			got, err := client.CoreV1().Pods(tt.ns).Create(ctx, p, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("create: %v (the rule only warns: every pod should be created)", err)
			}
			created = append(created, got)
			var verdict []string
			for _, text := range w.take() {
				if strings.Contains(text, `rule "`+privateRule+`"`) {
					verdict = append(verdict, text)
				}
			}
			allowed := len(verdict) == 0
			pulled, how := kubeletPulled(t, c, tt.ns, p.Name)
			t.Logf("admitfn allowed: %v %q; the kubelet pulled: %v (%s)", allowed, verdict, pulled, how)
			if allowed != pulled {
				t.Errorf("admitfn allowed = %v, but the kubelet pulled = %v", allowed, pulled)
			}
			if pulled != tt.pullable {
				t.Errorf("the kubelet pulled = %v, want %v: the case is not what it says", pulled, tt.pullable)
			}
		})
	}
}

// kubeletPulled waits until the kubelet has pulled the pod's image (the
// container runs) or failed to (ErrImagePull, ImagePullBackOff), and
// says which, with the kubelet's message.
func kubeletPulled(t *testing.T, c *cluster, namespace, name string) (bool, string) {
	t.Helper()
	var pulled bool
	var how string
	harness.WaitFor(t, 120*time.Second, "the kubelet to pull or fail to pull "+name, func() error {
		p, err := c.Admin.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, s := range p.Status.ContainerStatuses {
			switch {
			case s.State.Running != nil:
				pulled, how = true, "running"
				return nil
			case s.State.Waiting != nil && (s.State.Waiting.Reason == "ErrImagePull" || s.State.Waiting.Reason == "ImagePullBackOff"):
				pulled, how = false, s.State.Waiting.Reason+": "+s.State.Waiting.Message
				return nil
			}
		}
		return fmt.Errorf("phase %s, no pull result yet", p.Status.Phase)
	})
	return pulled, how
}
