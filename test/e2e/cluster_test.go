//go:build e2e && cluster

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestKnativeScaleFromZero is admitfn on real Knative: `ko apply -f
// config/` on a cluster with a real node, Knative Serving and Traefik;
// the URLs Knative assigned read by `admitfn admission-config --service`
// and `admitfn webhook-config --service`; kube-apiserver calling the
// validating webhook through Traefik and Knative's activator while the
// Service is at zero, and again warm; ImagePolicyWebhook (fail-open, the
// shape config/400 is for) through Traefik to image-policy's pods.
func TestKnativeScaleFromZero(t *testing.T) {
	ctx := context.Background()
	began := time.Now()
	c := startCluster(t, knativeHosts("image-policy.admitfn."+knativeDomain, "validating.admitfn."+knativeDomain))
	t.Logf("cluster up in %s", time.Since(began).Round(time.Second))
	step := time.Now()
	c.installKnative(t)
	t.Logf("Knative Serving available in %s", time.Since(step).Round(time.Second))
	step = time.Now()
	c.installTraefik(t, "admitfn")
	t.Logf("Traefik ready in %s", time.Since(step).Round(time.Second))

	// admitfn as README deploys it: the callers' Secret, then ko apply.
	token := randomToken(t)
	tokenFile := writeFile(t, filepath.Join(c.dir, "apiserver-token"), token)
	c.admin.kubectl(t, "", "create", "namespace", "admitfn")
	if _, _, err := c.admin.kubectl(t, "", "create", "secret", "generic", "admitfn-callers", "-n", "admitfn", "--from-file=token="+tokenFile); err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	step = time.Now()
	c.koApply(t, root, "admitfn", []string{"KO_CONFIG_PATH=ko.yaml"}, "-f", "config/")
	// config/410 keeps validating's last pod for 15 minutes after a
	// request; a test cannot wait that long to see it leave.
	if _, _, err := c.admin.kubectl(t, "", "patch", "ksvc", "validating", "-n", "admitfn", "--type=json", "-p",
		`[{"op":"replace","path":"/spec/template/metadata/annotations/autoscaling.knative.dev~1scale-to-zero-pod-retention-period","value":"0s"}]`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.admin.kubectl(t, "", "wait", "ksvc", "--all", "-n", "admitfn", "--for=condition=Ready", "--timeout=300s"); err != nil {
		c.admin.kubectl(t, "", "get", "ksvc,revisions,pods", "-A", "-o", "wide")
		t.Fatalf("admitfn's Services not Ready: %v", err)
	}
	t.Logf("admitfn's Services Ready in %s", time.Since(step).Round(time.Second))
	url, _, _ := c.admin.kubectl(t, "", "get", "ksvc", "validating", "-n", "admitfn", "-o", "jsonpath={.status.url}")
	if want := "https://validating.admitfn." + knativeDomain; url != want {
		t.Fatalf("validating's URL is %q, want %q", url, want)
	}

	// The apiserver learns both URLs from Knative, through admitfn's own
	// commands, and is restarted with them as an operator would.
	acDir := filepath.Join(c.dir, "admission")
	out, err := exec.Command(admitfnBin, "admission-config", "--service", "image-policy", "--kubeconfig", c.admin.Kubeconfig,
		"--ca-file", c.pki.CAFile, "--token-file", tokenFile, "--webhook-url", url, "--default-allow",
		"--allow-ttl", "-1", "--deny-ttl", "-1", "--out", acDir).CombinedOutput()
	t.Logf("$ admitfn admission-config --service image-policy --webhook-url %s --default-allow ...\n%s", url, out)
	if err != nil {
		t.Fatal(err)
	}
	regs, err := exec.Command(admitfnBin, "webhook-config", "--service", "validating", "--kubeconfig", c.admin.Kubeconfig, "--ca-file", c.pki.CAFile).Output()
	if err != nil {
		t.Fatalf("admitfn webhook-config: %v", err)
	}
	step = time.Now()
	c.restart(t, []string{"ImagePolicyWebhook"}, filepath.Join(acDir, "admission_config.yaml"))
	t.Logf("apiserver restarted with ImagePolicyWebhook and the webhooks' kubeconfig in %s", time.Since(step).Round(time.Second))
	if _, _, err := c.admin.kubectl(t, string(regs), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	c.namespace(t, "team-a")

	// Dry run: admission runs in full, and no image is pulled (the
	// machine reaches no registry but its own).
	create := func(name, image string, volumeImage string) (time.Duration, error) {
		p := pod(name, []string{image}, nil, nil)
		if volumeImage != "" {
			p.Spec.Volumes = []corev1.Volume{{Name: "tools", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: volumeImage, PullPolicy: corev1.PullIfNotPresent}}}}
		}
		started := time.Now()
		_, err := c.Admin.CoreV1().Pods("team-a").Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return time.Since(started), err
	}

	t.Run("ImagePolicyWebhook reaches image-policy through Traefik", func(t *testing.T) {
		// validating would deny it too; ImagePolicyWebhook runs first and
		// names itself in its refusal.
		_, err := create("latest", "nginx:latest", "")
		wantForbidden(t, err, "image policy webhook backend denied one or more images")
	})

	t.Run("validating wakes from zero for a pod create and answers within its timeout", func(t *testing.T) {
		waitAtZero(t, c, "validating", 120*time.Second)
		// ImagePolicyWebhook admits it (the apiserver sends it containers
		// only); validating, woken from zero, refuses the image volume.
		took, err := create("cold", "busybox:1.36", "nginx:latest")
		t.Logf("first pod create with validating at zero: %s", took.Round(time.Millisecond))
		wantForbidden(t, err, `admission webhook "workloads.validating.admitfn.dev" denied the request`, "spec.volumes[0].image.reference")
		if n := len(servicePods(t, c, "validating")); n == 0 {
			t.Errorf("validating has no pod after answering: the answer did not come from a woken pod")
		}
		var warm []time.Duration
		for i := range 20 {
			took, err := create(fmt.Sprintf("warm-%d", i), "busybox:1.36", "")
			if err != nil {
				t.Fatalf("warm pod create %d: %v", i, err)
			}
			warm = append(warm, took)
		}
		sort.Slice(warm, func(i, j int) bool { return warm[i] < warm[j] })
		t.Logf("warm pod create through the apiserver, Traefik and both backends: median %s, max %s (20 creates)",
			warm[len(warm)/2].Round(time.Millisecond), warm[len(warm)-1].Round(time.Millisecond))
	})
}

// servicePods are the running pods of a Knative Service in admitfn.
func servicePods(t testing.TB, c *cluster, service string) []corev1.Pod {
	t.Helper()
	list, err := c.Admin.CoreV1().Pods("admitfn").List(context.Background(), metav1.ListOptions{LabelSelector: "serving.knative.dev/service=" + service})
	if err != nil {
		t.Fatal(err)
	}
	var running []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			running = append(running, p)
		}
	}
	return running
}

// waitAtZero waits until Knative has scaled service to zero pods.
func waitAtZero(t testing.TB, c *cluster, service string, timeout time.Duration) {
	t.Helper()
	started := time.Now()
	waitFor(t, timeout, service+" at zero", func() error {
		if pods := servicePods(t, c, service); len(pods) > 0 {
			names := make([]string, len(pods))
			for i, p := range pods {
				names[i] = p.Name
			}
			return fmt.Errorf("pods %s", strings.Join(names, ", "))
		}
		return nil
	})
	t.Logf("%s at zero after %s", service, time.Since(started).Round(time.Second))
}
