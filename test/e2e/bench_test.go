//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/admitfn/admitfn/functions/metrics/metricstest"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/vap"
	"github.com/admitfn/admitfn/test/internal/harness"
)

// BenchmarkPodCreate measures pod creation through the real apiserver with
// admitfn's validating webhook registered (config/webhooks/500-validating.yaml,
// what the default policy needs) and admitfn warm behind it, against pods
// the webhook never sees: admitfn's own namespace, which their
// namespaceSelector leaves out. The two kinds of create alternate, so both
// share the same apiserver, etcd and moment on a noisy machine. It reports
// the median of each and their ratio (make bench prints it in its table).
// A fourth namespace has no webhook but the default policy's name-only
// rules as ValidatingAdmissionPolicies (admitfn vap): the apiserver
// decides there in process; a fifth has the least a policy can be.
func BenchmarkPodCreate(b *testing.B) {
	const plain, hooked, floor, inProcess, policyFloor = "admitfn", "bench", "floor", "vap", "vap-floor"
	dir := keptDir(b)
	p := newPKI(b, dir)
	cp := startControlPlane(b, dir, p, controlPlaneOptions{})
	port := harness.FreePort(b)
	cert, key := p.server(b, "admitfn", "127.0.0.1")
	backend := startProc(b, dir, "admitfn", admitfnBin, "serve",
		"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--tls-cert", cert, "--tls-key", key,
		"--handlers", "validating,mutating")
	baseURL := fmt.Sprintf("https://127.0.0.1:%d", port)
	waitReady(b, backend, harness.TLSClient(b, p.CAFile), baseURL+"/health/readiness", 10*time.Second)
	registerWebhooksWith(b, cp, baseURL, func(v *admissionregistrationv1.ValidatingWebhookConfiguration, m *admissionregistrationv1.MutatingWebhookConfiguration) {
		// admitfn's webhook judges its namespace alone: the others are the
		// floor webhook's and the policies'.
		for _, ns := range []string{floor, inProcess, policyFloor} {
			excludeNamespace(v.Webhooks, ns)
		}
		m.Webhooks = nil // the default policy mutates nothing: 510-mutating.yaml is not applied
	})
	// The floor: the least a webhook can do (echo the uid, allow), served
	// over TLS by a process of its own, registered like admitfn's but only for its
	// own namespace. It shows what any webhook costs on this machine.
	registerForNamespace(b, cp, startFloorWebhook(b, dir, p), "floor-", floor)
	// The default policy's name-only rules as ValidatingAdmissionPolicies
	// (admitfn vap), bound to their namespace alone: the apiserver
	// decides there with no webhook call.
	generated, err := vap.Generate(mustDefaultDocument(b), vap.Options{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: inProcess}}})
	if err != nil {
		b.Fatal(err)
	}
	for i := range generated.Policies {
		if _, err := cp.Admin.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(context.Background(), &generated.Policies[i], metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		if _, err := cp.Admin.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(context.Background(), &generated.Bindings[i], metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	// The least a ValidatingAdmissionPolicy can be (expression true),
	// bound to a namespace of its own: what any policy costs here.
	trivial := generated.Policies[0].DeepCopy()
	trivial.Name = "floor-policy"
	trivial.Spec.Variables, trivial.Spec.Validations = nil, []admissionregistrationv1.Validation{{Expression: "true"}}
	trivial.Spec.MatchConstraints.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: policyFloor}}
	trivialBinding := generated.Bindings[0].DeepCopy()
	trivialBinding.Name, trivialBinding.Spec.PolicyName = trivial.Name, trivial.Name
	if _, err := cp.Admin.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(context.Background(), trivial, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := cp.Admin.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(context.Background(), trivialBinding, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	namespaces := []string{plain, hooked, floor, inProcess, policyFloor}
	for _, ns := range namespaces {
		cp.namespace(b, ns)
	}

	client := unthrottled(b, cp)
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
	// Only admitfn's namespaces judge: :latest is refused there alone
	// (the policies act once the apiserver's informers have them).
	harness.WaitFor(b, 30*time.Second, "the generated policy to judge", func() error {
		if _, err := create(inProcess, "probe", "nginx:latest"); err == nil {
			client.CoreV1().Pods(inProcess).Delete(ctx, "probe", metav1.DeleteOptions{})
			return fmt.Errorf("a :latest pod was created in %s", inProcess)
		}
		return nil
	})
	for _, ns := range namespaces {
		_, err := create(ns, "check", "nginx:latest")
		if judged := err != nil; judged != (ns == hooked || ns == inProcess) {
			b.Fatalf("a :latest pod in %s: %v; want it refused only in %s and %s", ns, err, hooked, inProcess)
		}
	}
	took := alternateCreates(b, namespaces, create)
	without, with, withFloor, withVAP, withPolicyFloor := median(took[plain]), median(took[hooked]), median(took[floor]), median(took[inProcess]), median(took[policyFloor])
	b.ReportMetric(ms(without), "ms/pod-without-webhook")
	b.ReportMetric(ms(with), "ms/pod-with-admitfn")
	b.ReportMetric(ms(withFloor), "ms/pod-with-floor-webhook")
	b.ReportMetric(float64(with)/float64(without), "admitfn/without")
	b.ReportMetric(float64(withFloor)/float64(without), "floor/without")
	b.ReportMetric(ms(withVAP), "ms/pod-with-vap")
	b.ReportMetric(float64(withVAP)/float64(without), "vap/without")
	b.ReportMetric(ms(withPolicyFloor), "ms/pod-with-floor-policy")
	b.ReportMetric(float64(withPolicyFloor)/float64(without), "floor-policy/without")
}

// registerForNamespace registers the validating workload webhooks at
// baseURL for namespace ns alone (names prefixed with prefix), and no
// mutating webhook: one judge per namespace, so creates in the others
// never reach it.
func registerForNamespace(b *testing.B, cp *controlPlane, baseURL, prefix, ns string) {
	registerWebhooksWith(b, cp, baseURL, func(v *admissionregistrationv1.ValidatingWebhookConfiguration, m *admissionregistrationv1.MutatingWebhookConfiguration) {
		v.Name, m.Name = prefix+v.Name, prefix+m.Name
		v.Webhooks = slices.DeleteFunc(v.Webhooks, func(w admissionregistrationv1.ValidatingWebhook) bool { return w.NamespaceSelector == nil })
		sel := &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}
		for i := range v.Webhooks {
			v.Webhooks[i].Name, v.Webhooks[i].NamespaceSelector = prefix+v.Webhooks[i].Name, sel
		}
		m.Webhooks = nil
	})
}

// alternateCreates warms each namespace with 50 creates, then times b.N
// rounds of one create in each, and returns each namespace's times.
func alternateCreates(b *testing.B, namespaces []string, create func(ns, name, image string) (time.Duration, error)) map[string][]time.Duration {
	for i := range 50 { // warm connections, caches and the apiserver's webhook clients
		for _, ns := range namespaces {
			if _, err := create(ns, fmt.Sprintf("warm-%d", i), "nginx:1.17.1"); err != nil {
				b.Fatal(err)
			}
		}
	}
	took := map[string][]time.Duration{}
	b.ResetTimer()
	for i := range b.N {
		// Each round starts at another namespace: no kind of create
		// always follows the same other.
		for j := range namespaces {
			ns := namespaces[(i+j)%len(namespaces)]
			d, err := create(ns, fmt.Sprintf("pod-%d", i), "nginx:1.17.1")
			if err != nil {
				b.Fatal(err)
			}
			took[ns] = append(took[ns], d)
		}
	}
	b.StopTimer()
	return took
}

func mustDefaultDocument(t testing.TB) policy.Document {
	t.Helper()
	d, err := policy.ReadDocument(policy.DefaultYAML())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// BenchmarkPodCreateImagePolicy measures pod creation through an apiserver
// whose ImagePolicyWebhook plugin asks admitfn (configured with admitfn
// admission-config, as the README does). The plugin judges every pod in
// every namespace, so what it is compared with needs apiservers of their
// own: one without the plugin, and one whose plugin asks the floor (the
// least an ImageReview backend can do, over the same mutual TLS). Each
// round creates two pods on each apiserver, so all three see the same
// traffic: on the two with the plugin, one pod repeats the same spec,
// which the apiserver's allow cache (allowTTL) answers after the first, as
// it does for a Deployment's replicas, and one is made distinct by an
// *.image-policy.k8s.io annotation, which the plugin sends to its backend
// every time. Both backends' counts check which creates reached them.
func BenchmarkPodCreateImagePolicy(b *testing.B) {
	dir := keptDir(b)
	plain := startControlPlane(b, dir, newPKI(b, dir), controlPlaneOptions{AdmissionPlugins: []string{"NodeRestriction"}})
	plain.namespace(b, ns)
	env := newWebhookEnv(b, "yaml")
	backend := env.startBackend(b, "")
	metricsURL := fmt.Sprintf("https://127.0.0.1:%d/metrics", env.backendPort)
	floor := newWebhookEnv(b, "yaml")
	floorClient, floorURL := floor.startFloor(b)

	ctx := context.Background()
	type kind struct {
		name     string
		client   *kubernetes.Clientset
		distinct bool
	}
	kinds := []kind{
		{"without", unthrottled(b, plain), false}, {"without-again", unthrottled(b, plain), false},
		{"cached", unthrottled(b, env.cp), false}, {"asked", unthrottled(b, env.cp), true},
		{"floor-cached", unthrottled(b, floor.cp), false}, {"floor-asked", unthrottled(b, floor.cp), true},
	}
	create := func(k kind, round string) (time.Duration, error) {
		var annotations map[string]string
		if k.distinct {
			annotations = map[string]string{"bench.image-policy.k8s.io/pod": round}
		}
		start := time.Now()
		_, err := k.client.CoreV1().Pods(ns).Create(ctx, pod(k.name+"-"+round, []string{"nginx:1.17.1"}, nil, annotations), metav1.CreateOptions{})
		return time.Since(start), err
	}
	for i := range 50 { // warm connections and the plugins' clients
		for _, k := range kinds {
			if _, err := create(k, fmt.Sprintf("warm-%d", i)); err != nil {
				b.Fatalf("%s: %v", k.name, err)
			}
		}
	}

	took := map[string][]time.Duration{}
	asked, floorAsked := decisions(b, backend, metricsURL), floorReviews(b, floorClient, floorURL)
	b.ResetTimer()
	for i := range b.N {
		for _, k := range kinds {
			d, err := create(k, fmt.Sprint(i))
			if err != nil {
				b.Fatalf("%s: %v", k.name, err)
			}
			name := strings.TrimSuffix(k.name, "-again")
			took[name] = append(took[name], d)
		}
	}
	b.StopTimer()
	// Every distinct pod is a review; the repeated spec may be asked again
	// only when its allow cache entry expires (allowTTL, 100 s here).
	for _, c := range []struct {
		backend string
		n       float64
	}{
		{"admitfn", decisions(b, backend, metricsURL) - asked},
		{"the floor", floorReviews(b, floorClient, floorURL) - floorAsked},
	} {
		if c.n < float64(b.N) || c.n > float64(b.N)+2 {
			b.Fatalf("%s answered %v reviews for %d distinct and %d repeated pods; want %d (+ at most 2 expiries)", c.backend, c.n, b.N, b.N, b.N)
		}
	}
	without := median(took["without"])
	for _, k := range []string{"without", "cached", "asked", "floor-cached", "floor-asked"} {
		b.ReportMetric(ms(median(took[k])), "ms/pod-"+k)
	}
	for _, k := range []string{"cached", "asked", "floor-cached", "floor-asked"} {
		b.ReportMetric(float64(median(took[k]))/float64(without), k+"/without")
	}
}

// unthrottled is an admin client of cp without client-side rate
// limiting, which the benchmarks and storms would otherwise measure;
// edits change its configuration further.
func unthrottled(t testing.TB, cp *controlPlane, edits ...func(*rest.Config)) *kubernetes.Clientset {
	t.Helper()
	cfg := rest.CopyConfig(cp.AdminRest)
	cfg.QPS = -1
	for _, edit := range edits {
		edit(cfg)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// decisions is admitfn's count of ImageReview decisions, from /metrics.
func decisions(b *testing.B, client *http.Client, url string) float64 {
	b.Helper()
	return metricstest.Value(metricstest.Get(b, client, url), "admitfn_decisions_total", map[string]string{"handler": "imagepolicy"})
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

// startFloorWebhook serves the smallest correct AdmissionReview answer,
// allowed with the request's uid, over TLS on loopback, from a process of
// its own like admitfn's and with the same TLS setup (HTTP/1.1).
func startFloorWebhook(b *testing.B, dir string, p *pki) string {
	b.Helper()
	certFile, keyFile := p.server(b, "floor", "127.0.0.1")
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b))
	url := "https://" + addr
	runFloor(b, dir, harness.TLSClient(b, p.CAFile), url, certFile, keyFile, "")
	return url
}

// startFloor serves the floor ImageReview backend (allowed, nothing
// looked at) where env's apiserver expects admitfn, with the mutual TLS
// admitfn serve --client-ca has. It returns a client holding the
// apiserver's certificate, and the floor's URL.
func (env *webhookEnv) startFloor(b *testing.B) (*http.Client, string) {
	b.Helper()
	certFile, keyFile := env.pki.server(b, "floor", "127.0.0.1")
	pair, err := tls.LoadX509KeyPair(env.apiserverCert, env.apiserverKey)
	if err != nil {
		b.Fatal(err)
	}
	client := harness.TLSClient(b, env.pki.CAFile, pair)
	url := fmt.Sprintf("https://127.0.0.1:%d", env.backendPort)
	runFloor(b, env.dir, client, url, certFile, keyFile, env.pki.CAFile)
	return client, url
}

// runFloor re-executes the test binary as the floor (see serveFloor) and
// waits until it answers.
func runFloor(b *testing.B, dir string, client *http.Client, url, certFile, keyFile, clientCA string) {
	b.Helper()
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	if clientCA == "" {
		clientCA = "-"
	}
	spec := strings.Join([]string{strings.TrimPrefix(url, "https://"), certFile, keyFile, clientCA}, " ")
	proc := startProcEnv(b, dir, "floor-webhook", []string{floorEnv + "=" + spec}, self)
	waitReady(b, proc, client, url+"/ready", 10*time.Second)
}

// floorEnv tells a re-executed test binary to serve the floor webhook
// instead of running tests: "addr certFile keyFile clientCAFile", the last
// "-" when clients need no certificate.
const floorEnv = "ADMITFN_E2E_FLOOR"

// serveFloor is the floor webhook's process. An ImageReview (POST
// /imagepolicy) is allowed, anything else POSTed is read as an
// AdmissionReview and allowed with its uid; GET /reviews counts the
// ImageReviews, so a benchmark can tell which creates reached it.
func serveFloor(spec string) error {
	var addr, certFile, keyFile, clientCA string
	if _, err := fmt.Sscan(spec, &addr, &certFile, &keyFile, &clientCA); err != nil {
		return fmt.Errorf("%s=%q: %v", floorEnv, spec, err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	if clientCA != "-" {
		pemBytes, err := os.ReadFile(clientCA)
		if err != nil {
			return err
		}
		cfg.ClientCAs = x509.NewCertPool()
		if !cfg.ClientCAs.AppendCertsFromPEM(pemBytes) {
			return fmt.Errorf("%s: no certificate", clientCA)
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	ln, err := tls.Listen("tcp", addr, cfg)
	if err != nil {
		return err
	}
	var imageReviews atomic.Int64
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/ready":
			return
		case r.URL.Path == "/reviews":
			fmt.Fprint(w, imageReviews.Load())
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
		if r.URL.Path == "/imagepolicy" {
			imageReviews.Add(1)
			fmt.Fprint(w, `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","status":{"allowed":true}}`)
			return
		}
		fmt.Fprintf(w, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":%q,"allowed":true}}`, review.Request.UID)
	}))
}

// floorReviews is the floor's count of ImageReviews.
func floorReviews(b *testing.B, client *http.Client, url string) float64 {
	b.Helper()
	resp, err := client.Get(url + "/reviews")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var n float64
	if _, err := fmt.Fscan(resp.Body, &n); err != nil {
		b.Fatalf("%s/reviews: %v", url, err)
	}
	return n
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
