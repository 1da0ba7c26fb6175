//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/test/internal/harness"
)

// scaler plays the part of Knative Serving that matters to admission, for
// one Service in front of admitfn:
//
//   - the ingress: it terminates TLS on the URL the apiserver calls, and
//     forwards to the backend, which serves plain HTTP as in a Knative pod;
//   - the activator: while the Service is at zero a request is held, a
//     Pod is created through the real kube-apiserver — the create a
//     ReplicaSet controller makes, so it passes the whole admission chain,
//     ImagePolicyWebhook and the webhooks included — and only once that
//     create succeeded is the admitfn binary started; then the held
//     requests are released. A request not released within hold gets 503,
//     as from an activator that gave up;
//   - the autoscaler: after idle with no request, the backend stops and its
//     Pod is deleted;
//   - the data path's own pods: down(component) takes the ingress or the
//     activator away (requests fail), and restart(component) brings it back
//     only after its Pod is admitted by the apiserver in its namespace.
//
// Everything it does is logged to the test with the time since it began,
// so a test that fails prints the sequence that led there.
type scaler struct {
	t       testing.TB
	cp      *controlPlane
	dir     string
	name    string   // the Knative Service, e.g. "validating"
	image   string   // the image its Pods name
	args    []string // admitfn serve arguments, without --listen
	hold    time.Duration
	idle    time.Duration
	began   time.Time
	url     string
	minPods int // min-scale: never below this many (0 or 1 here)

	mu          sync.Mutex
	up          *proc         // the running backend, nil at zero
	backendURL  *url.URL      // where up listens
	ready       chan struct{} // closed when a scale-up succeeded
	scaling     bool
	waiting     int // requests held for a scale-up
	inflight    int
	lastRequest time.Time
	podName     string
	down        map[string]bool // data-path components not running
	// counts
	wakes, podCreates, podRefusals, starts int
	refusals                               []string
}

// scalerOptions are the Service's settings.
type scalerOptions struct {
	Name     string
	Image    string
	Args     []string
	Hold     time.Duration
	Idle     time.Duration
	MinScale int
}

// newScaler listens at once, so its URL can go into the apiserver's
// configuration; it acts only once attached to the started control plane.
func newScaler(t testing.TB, dir string, p *pki, o scalerOptions) *scaler {
	t.Helper()
	s := &scaler{t: t, dir: dir, name: o.Name, image: o.Image, args: o.Args, hold: o.Hold, idle: o.Idle,
		minPods: o.MinScale, began: time.Now(), ready: make(chan struct{}), down: map[string]bool{}}
	certFile, keyFile := p.server(t, "scaler-"+o.Name, "127.0.0.1")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	s.url = "https://" + ln.Addr().String()
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	stop := make(chan struct{})
	go s.autoscale(stop)
	t.Cleanup(func() {
		close(stop)
		srv.Close()
		s.scaleDown("test ended")
	})
	return s
}

// attach gives the scaler the control plane it creates Pods through, and
// brings a min-scale Service up.
func (s *scaler) attach(cp *controlPlane) {
	s.t.Helper()
	s.mu.Lock()
	s.cp = cp
	s.mu.Unlock()
	cp.namespace(s.t, "admitfn")
	if s.minPods > 0 {
		// A Service that never scales to zero was deployed before the
		// apiserver was pointed at it (deploying it afterwards would need
		// its own answer already): its pod runs without a create here.
		s.mu.Lock()
		s.scaling = true
		s.mu.Unlock()
		if err := s.start("deployed-before"); err != nil {
			s.t.Fatalf("%s at min-scale %d: %v", s.name, s.minPods, err)
		}
	}
}

// URL is what the apiserver is pointed at.
func (s *scaler) URL() string { return s.url }

func (s *scaler) logf(format string, a ...any) {
	s.t.Logf("[%s +%s] %s", s.name, time.Since(s.began).Round(time.Millisecond), fmt.Sprintf(format, a...))
}

// ServeHTTP is the ingress and the activator.
func (s *scaler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	what := describe(r)
	s.mu.Lock()
	if c := s.downComponent(); c != "" {
		s.mu.Unlock()
		s.logf("%s: refused, the %s is not running", what, c)
		http.Error(w, "no "+c+" is running", http.StatusServiceUnavailable)
		return
	}
	s.lastRequest = time.Now()
	s.inflight++
	ready := s.ready
	held := s.up == nil
	if held {
		s.waiting++
		if !s.scaling {
			s.scaling = true
			s.wakes++
			s.logf("%s at zero: holding it and scaling up", what)
			go s.scaleUpWhileWaited()
		} else {
			s.logf("%s at zero: holding it, a scale-up is under way", what)
		}
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight--
		s.lastRequest = time.Now()
		s.mu.Unlock()
	}()

	if held {
		timedOut := false
		select {
		case <-ready:
		case <-time.After(s.hold):
			timedOut = true
		}
		s.mu.Lock()
		s.waiting--
		s.mu.Unlock()
		if timedOut {
			s.logf("%s: no pod within %s, answering 503 as the activator does", what, s.hold)
			http.Error(w, "activator: timed out waiting for a pod of "+s.name, http.StatusServiceUnavailable)
			return
		}
	}
	s.mu.Lock()
	target := s.backendURL
	s.mu.Unlock()
	if target == nil {
		http.Error(w, s.name+" scaled down", http.StatusServiceUnavailable)
		return
	}
	httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
}

// describe names the request and what it asks about, for the log; the
// body is put back for the backend.
func describe(r *http.Request) string {
	body, err := io.ReadAll(r.Body)
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return fmt.Sprintf("%s %s (unreadable body: %v)", r.Method, r.URL.Path, err)
	}
	var review struct {
		Request *struct {
			Namespace, Name, Operation string
			Kind                       struct{ Kind string }
		}
		Spec *struct {
			Namespace  string
			Containers []struct{ Image string }
		}
	}
	_ = json.Unmarshal(body, &review)
	switch {
	case review.Request != nil:
		return fmt.Sprintf("%s %s (%s %s %s/%s)", r.Method, r.URL.Path, review.Request.Operation, review.Request.Kind.Kind, review.Request.Namespace, review.Request.Name)
	case review.Spec != nil:
		var images []string
		for _, c := range review.Spec.Containers {
			images = append(images, c.Image)
		}
		return fmt.Sprintf("%s %s (pod in %s: %s)", r.Method, r.URL.Path, review.Spec.Namespace, strings.Join(images, ", "))
	}
	return r.Method + " " + r.URL.Path
}

// scaleUpWhileWaited retries the scale-up, as a ReplicaSet controller
// retries a refused create, while any request is still held for it.
func (s *scaler) scaleUpWhileWaited() {
	for {
		err := s.scaleUp()
		if err == nil {
			return
		}
		s.mu.Lock()
		waiting := s.waiting
		s.mu.Unlock()
		if waiting == 0 {
			s.mu.Lock()
			s.scaling = false
			s.mu.Unlock()
			s.logf("no request is held any more: giving up, %s stays at zero", s.name)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// scaleUp creates the Pod through the apiserver and, once admitted, starts
// the backend.
func (s *scaler) scaleUp() error {
	s.mu.Lock()
	s.podCreates++
	name := fmt.Sprintf("%s-%05d", s.name, s.podCreates)
	s.mu.Unlock()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"serving.knative.dev/service": s.name}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "user-container", Image: s.image, Args: s.args}}},
	}
	started := time.Now()
	s.logf("creating Pod admitfn/%s through the apiserver", name)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := s.cp.Admin.CoreV1().Pods("admitfn").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		s.mu.Lock()
		s.podRefusals++
		s.refusals = append(s.refusals, err.Error())
		s.mu.Unlock()
		s.logf("Pod admitfn/%s refused after %s: %v", name, time.Since(started).Round(time.Millisecond), err)
		return err
	}
	s.logf("Pod admitfn/%s admitted after %s; starting admitfn", name, time.Since(started).Round(time.Millisecond))
	if err := s.start(name); err != nil {
		return err
	}
	s.logf("%s is up (%s after the create began); releasing held requests", s.name, time.Since(started).Round(time.Millisecond))
	return nil
}

// start runs admitfn for the Pod name and releases held requests.
func (s *scaler) start(name string) error {
	port := harness.FreePort(s.t)
	backend := startProc(s.t, s.dir, name, admitfnBin, append(append([]string{}, s.args...), "--listen", fmt.Sprintf("127.0.0.1:%d", port))...)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := pollReady(backend, base+"/health/readiness", 10*time.Second); err != nil {
		s.logf("admitfn in %s never became ready: %v", name, err)
		return err
	}
	u, _ := url.Parse(base)
	s.mu.Lock()
	s.up, s.backendURL, s.podName = backend, u, name
	s.starts++
	s.scaling = false
	close(s.ready)
	s.mu.Unlock()
	return nil
}

// autoscale scales to zero after idle, down to minPods.
func (s *scaler) autoscale(stop chan struct{}) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		s.mu.Lock()
		idle := s.up != nil && s.minPods == 0 && s.inflight == 0 && time.Since(s.lastRequest) > s.idle
		s.mu.Unlock()
		if idle {
			s.scaleDown(fmt.Sprintf("idle for %s", s.idle))
		}
	}
}

// scaleDown stops the backend and deletes its Pod.
func (s *scaler) scaleDown(why string) {
	s.mu.Lock()
	up, name := s.up, s.podName
	s.up, s.backendURL, s.podName = nil, nil, ""
	s.ready = make(chan struct{})
	s.mu.Unlock()
	if up == nil {
		return
	}
	up.stop()
	if name == "deployed-before" {
		return
	}
	err := s.cp.Admin.CoreV1().Pods("admitfn").Delete(context.Background(), name, metav1.DeleteOptions{})
	s.logf("scaled to zero (%s): admitfn stopped, Pod admitfn/%s deleted (%v)", why, name, err)
}

// settled says whether no scale-up is under way.
func (s *scaler) settled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.scaling
}

// atZero says whether no backend runs.
func (s *scaler) atZero() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up == nil
}

// counts returns how often it was woken, created a Pod, had one refused,
// and started admitfn.
func (s *scaler) counts() (wakes, creates, refusals, starts int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wakes, s.podCreates, s.podRefusals, s.starts
}

// dataPathPod is a Pod of a data-path component.
type dataPathPod struct {
	Component, Namespace, Image string
}

// activatorPod and ingressPod are the components of Knative's data path
// the scaler models, as Knative Serving with Kourier deploys them.
func activatorPod() dataPathPod {
	return dataPathPod{"activator", "knative-serving", "gcr.io/knative-releases/knative.dev/serving/cmd/activator:v1.20.0"}
}

func ingressPod() dataPathPod {
	return dataPathPod{"ingress", "kourier-system", "docker.io/envoyproxy/envoy:v1.34.1"}
}

func (s *scaler) downComponent() string {
	for _, c := range []string{activatorPod().Component, ingressPod().Component} {
		if s.down[c] {
			return c
		}
	}
	return ""
}

// takeDown makes a data-path component stop running (all its pods gone at
// once: a node lost, an upgrade gone wrong).
func (s *scaler) takeDown(c dataPathPod) {
	s.mu.Lock()
	s.down[c.Component] = true
	s.mu.Unlock()
	s.logf("the %s's pods are gone", c.Component)
}

// restart creates the component's Pod through the apiserver and brings the
// component back only if it was admitted.
func (s *scaler) restart(c dataPathPod, attempt int) error {
	name := fmt.Sprintf("%s-%d", c.Component, attempt)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: c.Component, Image: c.Image}}},
	}
	started := time.Now()
	_, err := s.cp.Admin.CoreV1().Pods(c.Namespace).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		s.logf("the %s's Pod %s/%s refused after %s: %v", c.Component, c.Namespace, name, time.Since(started).Round(time.Millisecond), err)
		return err
	}
	s.mu.Lock()
	delete(s.down, c.Component)
	s.mu.Unlock()
	s.logf("the %s's Pod %s/%s admitted after %s: it runs again", c.Component, c.Namespace, name, time.Since(started).Round(time.Millisecond))
	return nil
}

// pollReady waits for url to answer 200 or p to exit.
func pollReady(p *proc, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited (see %s)", p.name, p.log)
		}
		var resp *http.Response
		if resp, err = client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return err
}

// admitfnImage is the reference the scaler's Pods name: a digest, like the
// ko-built image config/ deploys, so it passes any tag rule.
const admitfnImage = "registry.example/admitfn/admitfn-5a7c2b@sha256:4f3c4a0e3d2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a493827"
