//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/test/internal/harness"
)

// kyvernoDisallowLatest is the Kyverno policy library's disallow-latest-tag
// in substance (an image must have a tag, and not :latest), enforced, and
// matched to one namespace: what an operator installs instead of admitfn's
// default policy.
const kyvernoDisallowLatest = `apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: disallow-latest-tag}
spec:
  validationFailureAction: Enforce
  background: false
  rules:
  - name: require-image-tag
    match: {any: [{resources: {kinds: [Pod], namespaces: [%[1]s]}}]}
    validate:
      message: "An image tag is required."
      pattern: {spec: {containers: [{image: "*:*"}]}}
  - name: validate-image-tag
    match: {any: [{resources: {kinds: [Pod], namespaces: [%[1]s]}}]}
    validate:
      message: "Using a mutable image tag e.g. 'latest' is not allowed."
      pattern: {spec: {containers: [{image: "!*:latest"}]}}
`

// BenchmarkKyvernoSideBySide runs Kyverno's admission controller (the
// binary in $KYVERNO, which make bench builds from test/kyverno) out of
// cluster against a kube-apiserver of the same build as the other
// benchmarks, beside admitfn's validating webhook and the floor webhook,
// each judging a namespace of its own, and pods in a fourth that none
// judges. Kyverno and admitfn must give the same answers on the same pods
// before anything is timed. It reports the median and p99 pod create of
// each, the resident memory of admitfn and Kyverno after the run, and how
// long Kyverno took from exec to its first refusal.
func BenchmarkKyvernoSideBySide(b *testing.B) {
	bin := os.Getenv("KYVERNO")
	if bin == "" {
		b.Fatal("KYVERNO is not set: run make bench, which builds Kyverno (test/kyverno) and sets it")
	}
	const plain, hooked, floor, kyv = "none", "admitfn", "floor", "kyverno-judged"
	dir := keptDir(b)
	p := newPKI(b, dir)
	cp := startControlPlane(b, dir, p, controlPlaneOptions{})
	ctx := context.Background()

	port := harness.FreePort(b)
	cert, key := p.server(b, "admitfn", "127.0.0.1")
	backend := startProc(b, dir, "admitfn", admitfnBin, "serve",
		"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--tls-cert", cert, "--tls-key", key, "--handlers", "validating")
	baseURL := fmt.Sprintf("https://127.0.0.1:%d", port)
	waitReady(b, backend, harness.TLSClient(b, p.CAFile), baseURL+"/health/readiness", 10*time.Second)
	registerForNamespace(b, cp, baseURL, "", hooked)
	registerForNamespace(b, cp, startFloorWebhook(b, dir, p), "floor-", floor)
	kyverno, firstRefusal := startKyverno(b, cp, dir, bin, kyv)
	namespaces := []string{plain, hooked, floor, kyv}
	for _, ns := range namespaces[:3] {
		cp.namespace(b, ns)
	}

	client := unthrottled(b, cp)
	create := func(ns, name, image string) (time.Duration, error) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}}}
		start := time.Now()
		_, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return time.Since(start), err
	}

	// The same answers first. Where the two policies differ, the
	// difference is counted (make bench shows it), not timed.
	var differ []string
	for _, c := range []struct {
		image   string
		refused bool
		same    bool // both policies give this answer
	}{
		{"nginx:latest", true, true},
		{"docker.io/library/nginx:latest", true, true},
		{"nginx", true, true},
		{"nginx:1.17.1", false, true},
		{"registry.example.com/team/app:v2", false, true},
		{"registry.example.com/team/app@sha256:" + strings.Repeat("a", 64), false, true},
		// A registry port is a colon: Kyverno's "*:*" takes it for a tag.
		{"registry.example.com:5000/team/app", true, false},
	} {
		_, admitfnErr := create(hooked, "same", c.image)
		_, kyvernoErr := create(kyv, "same", c.image)
		if _, err := create(plain, "same", c.image); err != nil {
			b.Fatalf("%s, judged by nothing: %v", c.image, err)
		}
		if (admitfnErr != nil) != c.refused {
			b.Fatalf("admitfn on %s: %v; want refused %v", c.image, admitfnErr, c.refused)
		}
		if c.same && (kyvernoErr != nil) != c.refused {
			b.Fatalf("Kyverno on %s: %v; want refused %v, as admitfn", c.image, kyvernoErr, c.refused)
		}
		if !c.same && kyvernoErr == nil {
			differ = append(differ, c.image)
		}
	}
	took := alternateCreates(b, namespaces, create)
	for _, ns := range namespaces {
		b.ReportMetric(ms(median(took[ns])), "ms/pod-"+ns)
		b.ReportMetric(ms(percentile(took[ns], 99)), "ms-p99/pod-"+ns)
	}
	b.ReportMetric(rssMiB(b, backend), "MiB-rss/admitfn")
	b.ReportMetric(rssMiB(b, kyverno), "MiB-rss/kyverno")
	b.ReportMetric(ms(firstRefusal), "ms-first-refusal/kyverno")
	b.ReportMetric(float64(len(differ)), "untagged-with-port-admitted/kyverno")
	for name, path := range map[string]string{"admitfn": admitfnBin, "kyverno": bin} {
		st, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(st.Size())/(1<<20), "MiB-binary/"+name)
	}
}

// startKyverno runs Kyverno's admission controller out of cluster (its
// --serverIP mode: webhooks registered by URL on loopback, its own CA and
// serving certificate in Secrets), with its CRDs applied and its webhooks
// limited to namespace ns, and applies kyvernoDisallowLatest there. It
// returns the process and how long it took from exec to refusing a
// :latest pod.
func startKyverno(b *testing.B, cp *controlPlane, dir, bin, ns string) (*proc, time.Duration) {
	admin := cp.clientFor(b, "kyverno-admin", "system:masters")
	crds := filepath.Join(kyvernoModuleDir(b), "config", "crds")
	if out, errOut, err := admin.kubectl(b, "", "apply", "--server-side", "-R", "-f", crds); err != nil {
		b.Fatalf("applying Kyverno's CRDs: %v\n%s\n%s", err, out, errOut)
	}
	cp.namespace(b, "kyverno")
	cp.namespace(b, ns)
	// Kyverno registers one webhook for every kind its policies name; its
	// ConfigMap's webhooks key is the namespaceSelector it puts on them.
	selector, _ := json.Marshal([]map[string]any{{"namespaceSelector": map[string]any{"matchLabels": map[string]string{corev1.LabelMetadataName: ns}}}})
	for name, data := range map[string]map[string]string{"kyverno": {"webhooks": string(selector)}, "kyverno-metrics": nil} {
		if _, err := cp.Admin.CoreV1().ConfigMaps("kyverno").Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	port := harness.FreePort(b)
	began := time.Now()
	k := startProcEnv(b, dir, "kyverno", []string{
		"KYVERNO_NAMESPACE=kyverno", "KYVERNO_POD_NAME=kyverno-local", "KYVERNO_SERVICEACCOUNT_NAME=kyverno-admission-controller",
		"KYVERNO_ROLE_NAME=kyverno", "KYVERNO_DEPLOYMENT=kyverno-admission-controller", "KYVERNO_SVC=kyverno-svc",
		"INIT_CONFIG=kyverno", "METRICS_CONFIG=kyverno-metrics",
	}, bin, "--kubeconfig", admin.Kubeconfig, "--serverIP", fmt.Sprintf("127.0.0.1:%d", port),
		"--webhookServerHost", "127.0.0.1", "--webhookServerPort", strconv.Itoa(port), "--admissionReports=false",
		"--metricsPort", strconv.Itoa(harness.FreePort(b)), "--disableMetrics", "--disableLogColor",
		"--caSecretName", "kyverno-svc.kyverno.svc.kyverno-tls-ca", "--tlsSecretName", "kyverno-svc.kyverno.svc.kyverno-tls-pair")
	client := unthrottled(b, cp)
	// Its policy webhook refuses the policy until Kyverno serves: apply
	// until it takes, then until a :latest pod is refused.
	harness.WaitFor(b, 180*time.Second, "Kyverno to refuse a :latest pod", func() error {
		if k.exited() {
			b.Fatalf("Kyverno exited; see %s", k.log)
		}
		if _, errOut, err := admin.kubectl(b, fmt.Sprintf(kyvernoDisallowLatest, ns), "apply", "-f", "-"); err != nil {
			return fmt.Errorf("applying the policy: %s", errOut)
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "first"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx:latest"}}}}
		_, err := client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil {
			return fmt.Errorf("a :latest pod was admitted")
		}
		if !strings.Contains(err.Error(), "disallow-latest-tag") {
			return fmt.Errorf("refused, but not by the policy: %v", err)
		}
		return nil
	})
	return k, time.Since(began)
}

// kyvernoModuleDir is Kyverno's module as test/kyverno pins it, in the
// module cache (make bench's build of Kyverno downloaded it): its CRDs are
// in config/crds.
func kyvernoModuleDir(b *testing.B) string {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/kyverno/kyverno")
	cmd.Dir = filepath.Join("..", "kyverno")
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("go list -m github.com/kyverno/kyverno in test/kyverno: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// percentile is the p-th percentile of ds (nearest rank).
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)*p+99)/100-1]
}

// rssMiB is a running process's resident memory, in MiB.
func rssMiB(b *testing.B, p *proc) float64 {
	r, err := harness.RSS(p.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	return float64(r) / (1 << 20)
}
