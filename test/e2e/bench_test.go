//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// BenchmarkPodCreate measures pod creation through the real apiserver with
// admitfn's validating webhook registered (config/webhooks/500-validating.yaml,
// what the default policy needs) and admitfn warm behind it, against pods
// the webhook never sees: admitfn's own namespace, which their
// namespaceSelector leaves out. The two kinds of create alternate, so both
// share the same apiserver, etcd and moment on a noisy machine. It reports
// the median of each and their ratio (make bench prints it in its table).
func BenchmarkPodCreate(b *testing.B) {
	const plain, hooked, floor = "admitfn", "bench", "floor"
	dir := keptDir(b)
	p := newPKI(b, dir)
	cp := startControlPlane(b, dir, p, controlPlaneOptions{})
	port := freePort(b)
	cert, key := p.server(b, "admitfn", "127.0.0.1")
	backend := startProc(b, dir, "admitfn", admitfnBin, "serve",
		"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--tls-cert", cert, "--tls-key", key,
		"--handlers", "validating,mutating")
	baseURL := fmt.Sprintf("https://127.0.0.1:%d", port)
	waitReady(b, backend, tlsClient(b, p.CAFile), baseURL+"/health/readiness", 10*time.Second)
	registerWebhooksWith(b, cp, baseURL, func(v *admissionregistrationv1.ValidatingWebhookConfiguration, m *admissionregistrationv1.MutatingWebhookConfiguration) {
		excludeNamespace(v.Webhooks, floor)
		m.Webhooks = nil // the default policy mutates nothing: 510-mutating.yaml is not applied
	})
	// The floor: the least a webhook can do (echo the uid, allow), served
	// over TLS by a process of its own, registered like admitfn's but only for its
	// own namespace. It shows what any webhook costs on this machine.
	floorURL := startFloorWebhook(b, dir, p)
	registerWebhooksWith(b, cp, floorURL, func(v *admissionregistrationv1.ValidatingWebhookConfiguration, m *admissionregistrationv1.MutatingWebhookConfiguration) {
		v.Name, m.Name = "floor-validating", "floor-mutating"
		v.Webhooks = slices.DeleteFunc(v.Webhooks, func(w admissionregistrationv1.ValidatingWebhook) bool { return w.NamespaceSelector == nil })
		sel := &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: floor}}
		for i := range v.Webhooks {
			v.Webhooks[i].Name, v.Webhooks[i].NamespaceSelector = "floor-"+v.Webhooks[i].Name, sel
		}
		m.Webhooks = nil
	})
	for _, ns := range []string{plain, hooked, floor} {
		cp.namespace(b, ns)
	}

	// Client-side rate limiting would be measured too: turn it off.
	cfg := rest.CopyConfig(cp.AdminRest)
	cfg.QPS = -1
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	create := func(ns, name, image string) (time.Duration, error) {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
		}
		start := time.Now()
		_, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		return time.Since(start), err
	}
	// Only admitfn's namespace judges: :latest is refused there alone.
	for _, ns := range []string{plain, hooked, floor} {
		_, err := create(ns, "check", "nginx:latest")
		if judged := err != nil; judged != (ns == hooked) {
			b.Fatalf("a :latest pod in %s: %v; want it refused only in %s", ns, err, hooked)
		}
	}
	for i := range 50 { // warm connections, caches and the apiserver's webhook clients
		for _, ns := range []string{plain, hooked, floor} {
			if _, err := create(ns, fmt.Sprintf("warm-%d", i), "nginx:1.17.1"); err != nil {
				b.Fatal(err)
			}
		}
	}

	took := map[string][]time.Duration{}
	b.ResetTimer()
	for i := range b.N {
		for _, ns := range []string{plain, hooked, floor} {
			d, err := create(ns, fmt.Sprintf("pod-%d", i), "nginx:1.17.1")
			if err != nil {
				b.Fatal(err)
			}
			took[ns] = append(took[ns], d)
		}
	}
	b.StopTimer()
	without, with, withFloor := median(took[plain]), median(took[hooked]), median(took[floor])
	b.ReportMetric(ms(without), "ms/pod-without-webhook")
	b.ReportMetric(ms(with), "ms/pod-with-admitfn")
	b.ReportMetric(ms(withFloor), "ms/pod-with-floor-webhook")
	b.ReportMetric(float64(with)/float64(without), "admitfn/without")
	b.ReportMetric(float64(withFloor)/float64(without), "floor/without")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// excludeNamespace adds ns to the namespaces the webhooks leave out.
func excludeNamespace(v []admissionregistrationv1.ValidatingWebhook, ns string) {
	for _, w := range v {
		if w.NamespaceSelector == nil {
			continue
		}
		for i, e := range w.NamespaceSelector.MatchExpressions {
			if e.Key == corev1.LabelMetadataName && e.Operator == metav1.LabelSelectorOpNotIn {
				w.NamespaceSelector.MatchExpressions[i].Values = append(e.Values, ns)
			}
		}
	}
}

// floorEnv tells a re-executed test binary to serve the floor webhook
// instead of running tests: "addr certFile keyFile".
const floorEnv = "ADMITFN_E2E_FLOOR"

// startFloorWebhook serves the smallest correct AdmissionReview answer,
// allowed with the request's uid, over TLS on loopback, from a process of
// its own like admitfn's and with the same TLS setup (HTTP/1.1).
func startFloorWebhook(b *testing.B, dir string, p *pki) string {
	b.Helper()
	certFile, keyFile := p.server(b, "floor", "127.0.0.1")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	proc := startProcEnv(b, dir, "floor-webhook", []string{floorEnv + "=" + addr + " " + certFile + " " + keyFile}, self)
	url := "https://" + addr
	waitReady(b, proc, tlsClient(b, p.CAFile), url+"/ready", 10*time.Second)
	return url
}

// serveFloor is the floor webhook's process.
func serveFloor(spec string) error {
	var addr, certFile, keyFile string
	if _, err := fmt.Sscan(spec, &addr, &certFile, &keyFile); err != nil {
		return fmt.Errorf("%s=%q: %v", floorEnv, spec, err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		return err
	}
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ready" {
			return
		}
		var review struct {
			Request struct {
				UID string `json:"uid"`
			} `json:"request"`
		}
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":%q,"allowed":true}}`, review.Request.UID)
	}))
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
