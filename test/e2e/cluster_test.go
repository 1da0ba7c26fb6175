//go:build e2e && cluster

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/test/internal/harness"
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
	mark := time.Now()
	c.installKnative(t)
	t.Logf("Knative Serving available in %s", time.Since(mark).Round(time.Second))
	mark = time.Now()
	c.installTraefik(t, "admitfn")
	t.Logf("Traefik ready in %s", time.Since(mark).Round(time.Second))

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
	mark = time.Now()
	c.koApply(t, root, "admitfn", []string{"KO_CONFIG_PATH=ko.yaml"}, "-f", "config/")
	// A rule over the private registry, in warn mode: every pod of the
	// pull secret cases is created, so the kubelet tries each pull, and
	// validating's warning says what admitfn decided.
	c.usePrivateRule(t)
	// config/410 keeps validating's last pod for 15 minutes after a
	// request; a test cannot wait that long to see it leave. Its decisions
	// go to a sink on the node's address, as a SinkBinding would set
	// K_SINK (the storms count them).
	sink := startDecisionSink(t)
	if _, _, err := c.admin.kubectl(t, "", "patch", "ksvc", "validating", "-n", "admitfn", "--type=json", "-p",
		`[{"op":"replace","path":"/spec/template/metadata/annotations/autoscaling.knative.dev~1scale-to-zero-pod-retention-period","value":"0s"},
		  {"op":"add","path":"/spec/template/spec/containers/0/env","value":[{"name":"K_SINK","value":"`+sink.url+`"}]}]`); err != nil {
		t.Fatal(err)
	}
	waitServiceReady(t, c, "image-policy", 300*time.Second)
	waitServiceReady(t, c, "validating", 300*time.Second)
	t.Logf("admitfn's Services Ready in %s", time.Since(mark).Round(time.Second))
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
	mark = time.Now()
	c.restart(t, []string{"ImagePolicyWebhook"}, filepath.Join(acDir, "admission_config.yaml"))
	t.Logf("apiserver restarted with ImagePolicyWebhook and the webhooks' kubeconfig in %s", time.Since(mark).Round(time.Second))
	if _, _, err := c.admin.kubectl(t, string(regs), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	c.namespace(t, "team-a")

	// Dry run: admission runs in full, and no image is pulled (the
	// machine reaches no registry but its own).
	create := func(name, image string, volumeImage string) (time.Duration, error) {
		p := pod(name, []string{image}, nil, nil)
		if volumeImage != "" {
			p.Spec.Volumes = []corev1.Volume{imageVolume("tools", volumeImage)}
		}
		started := time.Now()
		_, err := c.Admin.CoreV1().Pods("team-a").Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return time.Since(started), err
	}

	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow() // each step builds on the one before
		}
	}

	step("ImagePolicyWebhook reaches image-policy through Traefik", func(t *testing.T) {
		// validating would deny it too; ImagePolicyWebhook runs first and
		// names itself in its refusal.
		_, err := create("latest", "nginx:latest", "")
		wantForbidden(t, err, "image policy webhook backend denied one or more images")
	})

	step("validating wakes from zero for a pod create and answers within its timeout", func(t *testing.T) {
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

	step("first pod from zero: ten wake-ups, p50 and p95, and what they are made of", func(t *testing.T) {
		percentiles(t, wakeUps(t, c, 10, create))
	})

	for _, s := range stormSteps(c, sink) {
		step(s.name, s.f)
	}

	step("private images: admitfn allows exactly what the kubelet can pull, with each pod's credentials", c.kubeletOracle)

	// The data path's own pods, replaced while validating is at zero, are
	// admitted (the webhooks leave their namespaces out), and the next
	// workload pod wakes validating through the new ones.
	dataPath := func(t *testing.T) {
		waitAtZero(t, c, "validating", 120*time.Second)
		replacePods(t, c, "knative-serving", "app=activator")
		replacePods(t, c, "traefik", "app=traefik")
		replacePods(t, c, "kube-system", "k8s-app=kube-dns")
		if n := len(servicePods(t, c, "validating")); n != 0 {
			t.Errorf("validating has %d pods: replacing the data path woke it", n)
		}
		took, err := create("after-restarts", "busybox:1.36", "nginx:latest")
		t.Logf("first pod create from zero through the new activator and ingress: %s", took.Round(time.Millisecond))
		wantForbidden(t, err, `admission webhook "workloads.validating.admitfn.dev" denied the request`)
	}
	step("activator, ingress and DNS restart while validating is at zero", dataPath)

	// The shipped shape for a fail-closed plugin: image-policy as a static
	// pod of the kubelet, on loopback, as `admitfn static-pod` writes it.
	hostDir := filepath.Join(c.dir, "static-host")
	manifest := filepath.Join(c.node.dir, "manifests", "admitfn-image-policy.yaml")
	staticPort := harness.FreePort(t)
	var failClosed string
	step("fail-closed ImagePolicyWebhook served by a static pod", func(t *testing.T) {
		image, _, _ := c.admin.kubectl(t, "", "get", "ksvc", "image-policy", "-n", "admitfn", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
		certFile, keyFile := c.pki.server(t, "static", "127.0.0.1")
		for src, dst := range map[string]string{certFile: "tls.crt", keyFile: "tls.key", c.pki.CAFile: "client-ca.crt"} {
			copyFile(t, src, filepath.Join(hostDir, dst))
		}
		// The key is readable by the pod's user only.
		os.Chmod(filepath.Join(hostDir, "tls.key"), 0o600)
		os.Chown(filepath.Join(hostDir, "tls.key"), 65532, 65532)
		started := time.Now()
		if out, err := exec.Command(admitfnBin, "static-pod", "--image", image, "--port", fmt.Sprint(staticPort), "--host-dir", hostDir,
			"--client-ca-file", "client-ca.crt", "--policy-file=", "--out", manifest).CombinedOutput(); err != nil {
			t.Fatalf("admitfn static-pod: %v\n%s", err, out)
		}
		apiCert, apiKey := c.pki.client(t, "apiserver-to-admitfn", "kube-apiserver")
		pair, err := tls.LoadX509KeyPair(apiCert, apiKey)
		if err != nil {
			t.Fatal(err)
		}
		probe := harness.TLSClient(t, c.pki.CAFile, pair)
		readiness := fmt.Sprintf("https://127.0.0.1:%d/health/readiness", staticPort)
		harness.WaitFor(t, 90*time.Second, "the kubelet to start the static pod", func() error { return get(probe, readiness) })
		t.Logf("static pod answering %s after %s", readiness, time.Since(started).Round(time.Millisecond))

		failClosed = filepath.Join(c.dir, "admission-fail-closed")
		out, err := exec.Command(admitfnBin, "admission-config", "--url", fmt.Sprintf("https://127.0.0.1:%d", staticPort),
			"--ca-file", c.pki.CAFile, "--client-cert", apiCert, "--client-key", apiKey,
			"--token-file", tokenFile, "--webhook-url", url, "--default-allow=false",
			"--allow-ttl", "-1", "--deny-ttl", "-1", "--out", failClosed).CombinedOutput()
		if err != nil {
			t.Fatalf("admitfn admission-config: %v\n%s", err, out)
		}
		c.restart(t, []string{"ImagePolicyWebhook"}, filepath.Join(failClosed, "admission_config.yaml"))
		_, err = create("static-latest", "nginx:latest", "")
		wantForbidden(t, err, "image policy webhook backend denied one or more images", `rule "no-latest"`)
		if _, err := create("static-pinned", "busybox:1.36", ""); err != nil {
			t.Fatalf("a pod the policy allows: %v", err)
		}
	})
	step("with the static backend: activator, ingress and DNS restart while validating is at zero", dataPath)
	step("static backend stopped: pods refused; the kubelet restarts it with no API call", func(t *testing.T) {
		held := filepath.Join(c.dir, "admitfn-image-policy.yaml.held")
		if err := os.Rename(manifest, held); err != nil {
			t.Fatal(err)
		}
		harness.WaitFor(t, 60*time.Second, "the kubelet to stop the static pod", func() error {
			if _, err := create("probe-down", "busybox:1.36", ""); err == nil {
				return fmt.Errorf("still admitted")
			}
			return nil
		})
		_, err := create("while-down", "busybox:1.36", "")
		wantForbidden(t, err, fmt.Sprintf("127.0.0.1:%d/imagepolicy", staticPort), "connection refused")
		started := time.Now()
		if err := os.Rename(held, manifest); err != nil {
			t.Fatal(err)
		}
		harness.WaitFor(t, 90*time.Second, "admission to work again", func() error {
			_, err := create("back", "busybox:1.36", "")
			return err
		})
		t.Logf("admitted again %s after the manifest came back", time.Since(started).Round(time.Millisecond))
	})

	// What config/400 and `admission-config --service` refuse, on the real
	// thing: a fail-closed plugin pointed at image-policy at zero.
	step("the circle: a fail-closed plugin pointed at image-policy at zero refuses every pod, its own wake-up pod included", func(t *testing.T) {
		if _, _, err := c.admin.kubectl(t, "", "patch", "ksvc", "image-policy", "-n", "admitfn", "--type=json", "-p",
			`[{"op":"replace","path":"/spec/template/metadata/annotations/autoscaling.knative.dev~1min-scale","value":"0"}]`); err != nil {
			t.Fatal(err)
		}
		waitServiceReady(t, c, "image-policy", 180*time.Second)
		waitAtZero(t, c, "image-policy", 180*time.Second)
		circle := filepath.Join(c.dir, "admission-circle")
		args := []string{"admission-config", "--service", "image-policy", "--kubeconfig", c.admin.Kubeconfig, "--ca-file", c.pki.CAFile,
			"--token-file", tokenFile, "--webhook-url", url, "--default-allow=false", "--allow-ttl", "-1", "--deny-ttl", "-1", "--out", circle}
		out, err := exec.Command(admitfnBin, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "locks the cluster") {
			t.Fatalf("admission-config --service image-policy at min-scale 0, fail closed: %v\n%s\nwant it refused", err, out)
		}
		t.Logf("admission-config refused, as it should:\n%s", out)
		if out, err := exec.Command(admitfnBin, append(args, "--accept-lockout")...).CombinedOutput(); err != nil {
			t.Fatalf("admission-config --accept-lockout: %v\n%s", err, out)
		}
		c.restart(t, []string{"ImagePolicyWebhook"}, filepath.Join(circle, "admission_config.yaml"))

		took, err := create("circle", "busybox:1.36", "")
		t.Logf("workload pod create with image-policy at zero: %s: %v", took.Round(time.Millisecond), err)
		if err == nil {
			t.Fatal("a pod was admitted by a fail-closed plugin whose backend is at zero")
		}
		// Knative tried to wake image-policy: its ReplicaSet's pod creates
		// were refused by the plugin that waits on image-policy.
		var refused []string
		harness.WaitFor(t, 120*time.Second, "image-policy's wake-up pod to be refused", func() error {
			events, err := c.Admin.CoreV1().Events("admitfn").List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedCreate"})
			if err != nil {
				return err
			}
			refused = refused[:0]
			for _, e := range events.Items {
				if strings.HasPrefix(e.InvolvedObject.Name, "image-policy-") && strings.Contains(e.Message, "forbidden") {
					refused = append(refused, fmt.Sprintf("%s ×%d: %s", e.InvolvedObject.Name, e.Count, e.Message))
				}
			}
			if len(refused) == 0 {
				return fmt.Errorf("no FailedCreate event for image-policy yet")
			}
			return nil
		})
		t.Logf("the circle, as the ReplicaSet controller saw it:\n%s", strings.Join(refused, "\n"))
		if n := len(servicePods(t, c, "image-policy")); n != 0 {
			t.Errorf("image-policy has %d pods: it woke although its own pod had to be admitted by it", n)
		}

		// The way out is the apiserver's configuration: back to the static
		// backend, and pods are admitted again (image-policy's included).
		// validating is at zero: the create wakes it once the node's and
		// Knative's watches are open again (c.restart waits for them;
		// without that wait this create hung its whole 20 s).
		c.restart(t, []string{"ImagePolicyWebhook"}, filepath.Join(failClosed, "admission_config.yaml"))
		took, err = create("after-circle", "busybox:1.36", "")
		t.Logf("first pod create after going back to the static backend: %s", took.Round(time.Millisecond))
		if err != nil {
			t.Fatalf("a pod after going back to the static backend: %v", err)
		}
	})
}

// get fails unless url answers 200.
func get(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// replacePods deletes the pods selected in namespace and waits until a new
// one is Ready: what a node drain or a rollout does to them.
func replacePods(t testing.TB, c *cluster, namespace, selector string) {
	t.Helper()
	ctx := context.Background()
	old, err := c.Admin.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	gone := map[string]bool{}
	for _, p := range old.Items {
		gone[p.Name] = true
	}
	if err := c.Admin.CoreV1().Pods(namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: selector}); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	harness.WaitFor(t, 120*time.Second, "a new "+selector+" pod in "+namespace+" Ready", func() error {
		list, err := c.Admin.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		for _, p := range list.Items {
			if gone[p.Name] || p.DeletionTimestamp != nil {
				continue
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		return fmt.Errorf("none yet")
	})
	t.Logf("%s/%s replaced and Ready in %s", namespace, selector, time.Since(started).Round(time.Millisecond))
}

// waitServiceReady waits until Knative reports the Service Ready for its
// latest generation (`kubectl wait` fails at once while the status has no
// condition yet, and passes on the old one right after a change).
func waitServiceReady(t testing.TB, c *cluster, name string, timeout time.Duration) {
	t.Helper()
	harness.WaitFor(t, timeout, "Knative Service "+name+" Ready", func() error {
		out, err := c.admin.get("ksvc", name, "-n", "admitfn",
			`{.metadata.generation} {.status.observedGeneration} {.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil {
			return err
		}
		f := strings.Fields(out)
		if len(f) != 3 || f[0] != f[1] || f[2] != "True" {
			return fmt.Errorf("generation, observed generation, Ready: %q", out)
		}
		return nil
	})
}

// servicePods are the pods of a Knative Service in admitfn; terminating
// ones only when withTerminating.
func servicePods(t testing.TB, c *cluster, service string, withTerminating ...bool) []corev1.Pod {
	t.Helper()
	list, err := c.Admin.CoreV1().Pods("admitfn").List(context.Background(), metav1.ListOptions{LabelSelector: "serving.knative.dev/service=" + service})
	if err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil || len(withTerminating) > 0 && withTerminating[0] {
			pods = append(pods, p)
		}
	}
	return pods
}

// waitAtZero waits until Knative has scaled service to zero pods, and the
// last one is gone: a terminating pod still answers what reaches it.
// The containers of a pod Knative scaled down are ended at once rather
// than waited for: its queue-proxy sleeps 30 s after SIGTERM (Knative's
// fixed drain) before it exits, which a real cluster spends in the
// background and a test would spend waiting, once per wake-up it
// measures. The kubelet then removes the pod as it would after the drain.
func waitAtZero(t testing.TB, c *cluster, service string, timeout time.Duration) {
	t.Helper()
	started := time.Now()
	killed := map[string]bool{} // the pods' addresses
	harness.WaitFor(t, timeout, service+" at zero", func() error {
		if pods := servicePods(t, c, service, true); len(pods) > 0 {
			names := make([]string, len(pods))
			for i, p := range pods {
				names[i] = p.Name
				if p.DeletionTimestamp != nil {
					c.node.killContainers(p)
					if p.Status.PodIP != "" {
						killed[p.Status.PodIP] = true
					}
				}
			}
			return fmt.Errorf("pods %s", strings.Join(names, ", "))
		}
		// Ended early, a pod can be gone before kube-proxy has taken its
		// address out of the Service: a create then hung its whole 20 s on
		// it (Knative's 30 s drain would have covered the lag).
		rules, err := exec.Command("iptables-save", "-t", "nat").Output()
		if err != nil {
			return err
		}
		for ip := range killed {
			if strings.Contains(string(rules), "--to-destination "+ip+":") {
				return fmt.Errorf("kube-proxy still sends to %s", ip)
			}
		}
		return nil
	})
	t.Logf("%s at zero after %s", service, time.Since(started).Round(time.Second))
}
