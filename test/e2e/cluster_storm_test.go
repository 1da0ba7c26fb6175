//go:build e2e && cluster

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/admitfn/admitfn/functions/metrics/metricstest"
	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/test/internal/harness"
)

// Storms: many pod creates at once, on the real cluster, while validating
// is at zero, while its pods are deleted, while the activator restarts and
// while the registry hangs. Each request is a dry-run create in team-a
// whose answer the policy fixes in advance (every fourth carries a :latest
// image volume, which validating refuses; the registry phase's answers
// depend on each rule's onRegistryError), so a refusal the policy intends
// is told apart from one a failure caused (failurePolicy is Fail: any
// failure refuses).
// Every answer admitfn gave must have its CloudEvent at a sink this test
// runs on the node's bridge address, and its count in admitfn_decisions_total.

// stormNamespace is where the storms' pods are created.
const stormNamespace = "team-a"

// decisionSink receives admitfn's CloudEvents (binary mode: the data is
// the body) and keeps validating's decisions by pod name.
type decisionSink struct {
	url string
	mu  sync.Mutex
	// got holds, per pod name, each decision in the order they came.
	got map[string][]sinkDecision
}

// sinkDecision is what the storms read of a decision event.
type sinkDecision struct {
	Allowed    bool
	FailedOpen bool
}

func startDecisionSink(t *testing.T) *decisionSink {
	t.Helper()
	l, err := net.Listen("tcp", nodeIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	s := &decisionSink{url: "http://" + l.Addr().String(), got: map[string][]sinkDecision{}}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var d struct {
			Handler    string   `json:"handler"`
			Namespace  string   `json:"namespace"`
			Name       string   `json:"name"`
			Allowed    bool     `json:"allowed"`
			FailedOpen []string `json:"failedOpen"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&d); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if d.Handler == "validating" && d.Namespace == stormNamespace {
			s.mu.Lock()
			s.got[d.Name] = append(s.got[d.Name], sinkDecision{Allowed: d.Allowed, FailedOpen: len(d.FailedOpen) > 0})
			s.mu.Unlock()
		}
		w.WriteHeader(http.StatusAccepted)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

// decisions is what the sink holds for name.
func (s *decisionSink) decisions(name string) []sinkDecision {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkDecision(nil), s.got[name]...)
}

// stormRequest is one create of a storm and the answer the policy gives.
type stormRequest struct {
	pod *corev1.Pod
	// refusal, when not empty, is what validating's refusal says: the
	// policy refuses this pod.
	refusal string
	// failOpen: the policy admits it only by failing open (a registry
	// rule with onRegistryError: allow, the registry down).
	failOpen bool
}

// stormOutcome is one create and how it ended.
type stormOutcome struct {
	stormRequest
	took     time.Duration
	err      error
	answered bool // the answer is admitfn's: admitted, or refused by its rule
}

// stormLoad says how many creates a phase sends: workers creates at once,
// each worker sending the next when its last is answered, until count
// creates are sent or for as long as duration (whichever is set).
type stormLoad struct {
	workers  int
	count    int
	duration time.Duration
	// request is the i-th create (default: latestVolumeEveryFourth).
	request func(phase string, i int) stormRequest
}

// latestVolumeEveryFourth is busybox:1.36, admitted, and every fourth with
// a :latest image volume, which validating refuses (ImagePolicyWebhook
// sees containers only, so the refusal is validating's).
func latestVolumeEveryFourth(phase string, i int) stormRequest {
	r := stormRequest{pod: pod(fmt.Sprintf("%s-%d", phase, i), []string{"busybox:1.36"}, nil, nil)}
	if i%4 == 3 {
		r.pod.Spec.Volumes = []corev1.Volume{imageVolume("tools", "nginx:latest")}
		r.refusal = "spec.volumes[0].image.reference"
	}
	return r
}

// stormClient is an admin client without client-side rate limits: the
// storm's rate is the apiserver's and admitfn's, not client-go's.
func stormClient(t testing.TB, c *cluster) *kubernetes.Clientset {
	return unthrottled(t, c.controlPlane, func(cfg *rest.Config) {
		cfg.Timeout = 60 * time.Second
		// The private-readable rule warns on every lookup the registry
		// outage fails; the counts are the record, not client-go's log.
		cfg.WarningHandler = rest.NoWarnings{}
	})
}

// runStorm sends load as dry-run pod creates named phase-N and returns
// each outcome.
func runStorm(client kubernetes.Interface, phase string, load stormLoad) []stormOutcome {
	if load.request == nil {
		load.request = latestVolumeEveryFourth
	}
	var (
		mu   sync.Mutex
		out  []stormOutcome
		next int
		wg   sync.WaitGroup
	)
	deadline := time.Now().Add(load.duration)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if load.count > 0 && next >= load.count || load.duration > 0 && time.Now().After(deadline) {
			return 0, false
		}
		next++
		return next - 1, true
	}
	for range load.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i, ok := take()
				if !ok {
					return
				}
				o := stormOutcome{stormRequest: load.request(phase, i)}
				started := time.Now()
				_, o.err = client.CoreV1().Pods(stormNamespace).Create(context.Background(), o.pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
				o.took = time.Since(started)
				o.answered = o.err == nil || refusedByRule(o.err, "")
				mu.Lock()
				out = append(out, o)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// refusedByRule reports whether err is validating's refusal, and says
// what (when not empty).
func refusedByRule(err error, what string) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), `admission webhook "workloads.validating.admitfn.dev" denied the request`) &&
		strings.Contains(err.Error(), what)
}

// podTimeline records when each of validating's pods was created and
// became Ready, from a watch started before a phase.
type podTimeline struct {
	mu      sync.Mutex
	created map[string]time.Time
	ready   map[string]time.Time
	stop    func()
}

func watchServicePods(t *testing.T, c *cluster, service string) *podTimeline {
	t.Helper()
	w, err := c.Admin.CoreV1().Pods("admitfn").Watch(context.Background(), metav1.ListOptions{LabelSelector: "serving.knative.dev/service=" + service})
	if err != nil {
		t.Fatal(err)
	}
	pt := &podTimeline{created: map[string]time.Time{}, ready: map[string]time.Time{}, stop: w.Stop}
	go func() {
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			pt.mu.Lock()
			if _, seen := pt.created[p.Name]; !seen {
				pt.created[p.Name] = p.CreationTimestamp.Time
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					if _, seen := pt.ready[p.Name]; !seen {
						pt.ready[p.Name] = time.Now()
					}
				}
			}
			pt.mu.Unlock()
		}
	}()
	t.Cleanup(w.Stop)
	return pt
}

// settle waits up to 3 s for the watch to have seen each pod it saw
// created become Ready (its events trail the storm's last answer).
func (pt *podTimeline) settle() {
	for range 30 {
		pt.mu.Lock()
		waiting := len(pt.ready) < len(pt.created)
		pt.mu.Unlock()
		if !waiting {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// since describes the pods created after start: when each was created and
// when it was Ready, relative to start (creation stamps have whole seconds).
func (pt *podTimeline) since(start time.Time) (int, string) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	var names []string
	for n, at := range pt.created {
		if !at.Before(start.Truncate(time.Second)) {
			names = append(names, n)
		}
	}
	sort.Slice(names, func(i, j int) bool { return pt.created[names[i]].Before(pt.created[names[j]]) })
	var parts []string
	for _, n := range names {
		ready := "not Ready"
		if at, ok := pt.ready[n]; ok {
			ready = fmt.Sprintf("Ready at +%.1f s", at.Sub(start).Seconds())
		}
		parts = append(parts, fmt.Sprintf("created at +%.0f s, %s", pt.created[n].Sub(start.Truncate(time.Second)).Seconds(), ready))
	}
	return len(names), strings.Join(parts, "; ")
}

// decisionCounter sums admitfn_decisions_total{handler="validating"} over
// validating's pods, scraping each pod's metrics port on the bridge, and
// keeps each pod's last value (a counter: a pod that is gone keeps what it
// last said).
type decisionCounter struct {
	client *http.Client
	mu     sync.Mutex
	last   map[string]float64
	base   map[string]float64
}

func newDecisionCounter() *decisionCounter {
	return &decisionCounter{client: &http.Client{Timeout: 2 * time.Second}, last: map[string]float64{}, base: map[string]float64{}}
}

// scrape reads every running pod of validating once; baseline records the
// values as the phase's zero.
func (dc *decisionCounter) scrape(t testing.TB, c *cluster, baseline bool) {
	for _, p := range servicePods(t, c, "validating", true) {
		if p.Status.PodIP == "" {
			continue
		}
		v, err := dc.read(t, p.Status.PodIP)
		if err != nil {
			continue
		}
		dc.mu.Lock()
		if baseline {
			dc.base[p.Name] = v
		}
		dc.last[p.Name] = v
		dc.mu.Unlock()
	}
}

func (dc *decisionCounter) read(t testing.TB, ip string) (float64, error) {
	resp, err := dc.client.Get("http://" + net.JoinHostPort(ip, "9095") + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	// Read whole first: a pod going away may cut the answer short, which
	// is a scrape to skip, not a malformed exposition.
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s", resp.Status)
	}
	return metricstest.Value(metricstest.Parse(t, bytes.NewReader(body)), "admitfn_decisions_total", map[string]string{"handler": "validating"}), nil
}

// since is the decisions counted since the baseline, over how many pods.
func (dc *decisionCounter) since() (float64, int) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	var sum float64
	for n, v := range dc.last {
		sum += v - dc.base[n]
	}
	return sum, len(dc.last)
}

// scrapeWhile scrapes every 300 ms until stop is closed, then once more.
func (dc *decisionCounter) scrapeWhile(t testing.TB, c *cluster, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				dc.scrape(t, c, false)
				return
			case <-time.After(300 * time.Millisecond):
				dc.scrape(t, c, false)
			}
		}
	}()
	return done
}

// stormReport checks a phase's outcomes: no refusal the policy did not
// intend (unless mayFail: a fault outside admitfn may cause them, and
// they are counted and shown), no admission of what it refuses, every
// answer of admitfn's with its CloudEvent and counted in its metric; it
// logs the counts and latencies.
func stormReport(t *testing.T, phase string, outs []stormOutcome, sink *decisionSink, dc *decisionCounter, mayFail bool) {
	t.Helper()
	var admitted, refused, unintended, timedOut, wronglyAdmitted, failedOpen int
	causes := map[string]int{}
	lat := make([]time.Duration, 0, len(outs))
	for _, o := range outs {
		lat = append(lat, o.took)
		switch {
		case o.err == nil && o.refusal != "":
			wronglyAdmitted++
		case o.err == nil:
			admitted++
		case o.refusal != "" && refusedByRule(o.err, o.refusal):
			refused++
		default:
			unintended++
			msg := o.err.Error()
			if apierrors.IsTimeout(o.err) || errors.Is(o.err, context.DeadlineExceeded) || strings.Contains(msg, "deadline exceeded") || strings.Contains(msg, "timeout") {
				timedOut++
			}
			if len(msg) > 400 {
				msg = msg[:400] + "…"
			}
			causes[msg]++
		}
	}
	pct := func(p int) string { return msText(percentile(lat, p)) }
	t.Logf("%s: %d creates: %d admitted, %d refused as the policy intends, %d refused by a failure (%d of them timeouts), %d admitted that the policy refuses; latency p50 %s, p95 %s, p99 %s, max %s",
		phase, len(outs), admitted, refused, unintended, timedOut, wronglyAdmitted, pct(50), pct(95), pct(99), pct(100))
	for msg, n := range causes {
		t.Logf("%s: ×%d %s", phase, n, msg)
	}
	if wronglyAdmitted > 0 {
		t.Errorf("%s: %d creates the policy refuses were admitted", phase, wronglyAdmitted)
	}

	// Every answer of admitfn's has its event, with the same verdict. The
	// sender is asynchronous: give the queue a moment.
	var lost, mismatched, duplicated []string
	harness.WaitFor(t, 15*time.Second, "a CloudEvent for each of admitfn's answers", func() error {
		lost, mismatched, duplicated = lost[:0], mismatched[:0], duplicated[:0]
		for _, o := range outs {
			if !o.answered {
				continue
			}
			got := sink.decisions(o.pod.Name)
			switch {
			case len(got) == 0:
				lost = append(lost, o.pod.Name)
			case got[len(got)-1].Allowed != (o.err == nil):
				mismatched = append(mismatched, o.pod.Name)
			case len(got) > 1:
				duplicated = append(duplicated, o.pod.Name)
			}
		}
		if len(lost) > 0 {
			return fmt.Errorf("%d answers without an event, e.g. %s", len(lost), lost[0])
		}
		return nil
	})
	var openWrong []string
	for _, o := range outs {
		if o.err != nil {
			continue
		}
		got := sink.decisions(o.pod.Name)
		if len(got) > 0 && got[len(got)-1].FailedOpen {
			failedOpen++
		}
		if len(got) > 0 && got[len(got)-1].FailedOpen != o.failOpen {
			openWrong = append(openWrong, o.pod.Name)
		}
	}
	if failedOpen > 0 || len(openWrong) > 0 {
		t.Logf("%s: %d admitted by failing open (onRegistryError: allow)", phase, failedOpen)
	}
	if len(openWrong) > 0 {
		t.Errorf("%s: %d admissions failed open where the policy does not (or did not where it does), e.g. %s", phase, len(openWrong), openWrong[0])
	}
	if len(mismatched) > 0 {
		t.Errorf("%s: %d events say the opposite of the answer the client got, e.g. %s", phase, len(mismatched), mismatched[0])
	}
	if len(duplicated) > 0 {
		// A request retried after a failure is decided twice: not lost,
		// but worth knowing.
		t.Logf("%s: %d creates were decided more than once (a retry after a failure)", phase, len(duplicated))
	}
	decided, pods := dc.since()
	t.Logf("%s: %d answers of admitfn's, each with its CloudEvent; admitfn_decisions_total rose by %.0f over %d pods", phase, admitted+refused+wronglyAdmitted, decided, pods)
	// At least: a request retried after a failure, or a Deployment's
	// finalizer update, is decided without being one of the storm's.
	if int(decided) < admitted+refused+wronglyAdmitted {
		t.Errorf("%s: admitfn_decisions_total counts %.0f decisions for %d answers", phase, decided, admitted+refused+wronglyAdmitted)
	}
	if unintended > 0 && !mayFail {
		t.Errorf("%s: %d creates refused by a failure, not by the policy", phase, unintended)
	}
}

// stormPhase runs one phase: load, with fault running beside it (nil for
// none), watching validating's pods and counting its decisions.
func stormPhase(t *testing.T, c *cluster, sink *decisionSink, phase string, load stormLoad, fault func(stop <-chan struct{}), mayFail bool) {
	t.Helper()
	client := stormClient(t, c)
	pods := watchServicePods(t, c, "validating")
	defer pods.stop()
	dc := newDecisionCounter()
	dc.scrape(t, c, true)
	stop := make(chan struct{})
	scraped := dc.scrapeWhile(t, c, stop)
	start := time.Now()
	var (
		outs []stormOutcome
		took time.Duration
	)
	stormed := make(chan struct{})
	go func() {
		defer close(stormed)
		outs = runStorm(client, phase, load)
		took = time.Since(start)
		close(stop)
	}()
	// The fault on the test's goroutine: it may fail the test.
	if fault != nil {
		fault(stop)
	}
	<-stormed
	<-scraped
	pods.settle()
	n, timeline := pods.since(start)
	t.Logf("%s: %d creates in %s (%.0f/s); validating pods started: %d (%s)", phase, len(outs), took.Round(time.Millisecond), float64(len(outs))/took.Seconds(), n, timeline)
	stormReport(t, phase, outs, sink, dc, mayFail)
}

// stormSteps are the storm steps of TestKnativeScaleFromZero, run with
// validating sending its decisions to sink.
func stormSteps(c *cluster, sink *decisionSink) []namedStep {
	return []namedStep{
		{"storm: 100 pod creates at once with validating at zero", func(t *testing.T) {
			waitAtZero(t, c, "validating", 120*time.Second)
			stormPhase(t, c, sink, "burst-from-zero", stormLoad{workers: 100, count: 100}, nil, false)
		}},
		{"storm: a Deployment scaled from 0 to 30 with validating at zero", func(t *testing.T) {
			deploymentStorm(t, c, sink, 30)
		}},
		{"storm: 20 s of 8 creates at a time while a validating pod is deleted every 4 s", func(t *testing.T) {
			stormPhase(t, c, sink, "pods-deleted", stormLoad{workers: 8, duration: 20 * time.Second}, func(stop <-chan struct{}) {
				for {
					select {
					case <-stop:
						return
					case <-time.After(4 * time.Second):
					}
					pods := servicePods(t, c, "validating")
					if len(pods) == 0 {
						continue
					}
					sort.Slice(pods, func(i, j int) bool { return pods[i].CreationTimestamp.Before(&pods[j].CreationTimestamp) })
					if err := c.Admin.CoreV1().Pods("admitfn").Delete(context.Background(), pods[0].Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
						t.Errorf("deleting %s: %v", pods[0].Name, err)
					}
				}
			}, false)
		}},
		// Warm, requests go from the ingress to validating's pods without
		// the activator (Knative puts it in the path only when capacity is
		// short): restarting it then changes nothing. From zero, it holds
		// the requests while the first pod starts.
		{"storm: 20 s of 8 creates at a time from zero, the activator restarted while it holds them", func(t *testing.T) {
			waitAtZero(t, c, "validating", 120*time.Second)
			stormPhase(t, c, sink, "activator-restart", stormLoad{workers: 8, duration: 20 * time.Second}, func(stop <-chan struct{}) {
				time.Sleep(300 * time.Millisecond)
				replacePods(t, c, "knative-serving", "app=activator")
			}, true)
		}},
		{"storm: the private registry hangs for a while: each registry rule's onRegistryError in the counts", func(t *testing.T) {
			registryOutage(t, c, sink)
		}},
	}
}

// registryOutage storms with images of the private registry, which two
// rules of usePrivateRule's policy must resolve: outage-deny (the default
// onRegistryError: deny) and outage-allow (onRegistryError: allow). Each
// create names a tag no pod has looked up before, so no cache answers for
// the registry. Up, then hanging (each lookup ends at the policy's 3 s
// registry timeout), then back.
func registryOutage(t *testing.T, c *cluster, sink *decisionSink) {
	ctx := context.Background()
	host := c.private.Host()
	_, err := c.Admin.CoreV1().Secrets(stormNamespace).Create(ctx, dockerConfigSecret("storm-regcred", host, c.privateCreds), metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	img := registrytest.Image(t, nil)
	const up, hanging, back = 16, 24, 16
	for i := range up + hanging + back {
		for _, repo := range []string{"outage/deny", "outage/allow"} {
			c.private.Push(fmt.Sprintf("%s:t%d", repo, i), img)
		}
	}
	requests := func(offset int, down bool) func(string, int) stormRequest {
		return func(phase string, i int) stormRequest {
			repo, r := "outage/deny", stormRequest{}
			if i%2 == 1 {
				repo = "outage/allow"
				r.failOpen = down
			} else if down {
				r.refusal = `rule "outage-deny"`
			}
			// An image volume: validating reads it with the pod's pull
			// secret; ImagePolicyWebhook (containers only, and no pull
			// secrets in an ImageReview) does not see it.
			r.pod = pod(fmt.Sprintf("%s-%d", phase, i), []string{"busybox:1.36"}, nil, nil)
			r.pod.Spec.Volumes = []corev1.Volume{imageVolume("outage", c.private.Ref(repo, fmt.Sprintf(":t%d", offset+i)))}
			r.pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "storm-regcred"}}
			return r
		}
	}
	stormPhase(t, c, sink, "registry-up", stormLoad{workers: 8, count: up, request: requests(0, false)}, nil, false)
	c.private.SetFault(registrytest.Hang)
	defer c.private.SetFault(registrytest.Healthy)
	stormPhase(t, c, sink, "registry-hangs", stormLoad{workers: 8, count: hanging, request: requests(up, true)}, nil, false)
	c.private.SetFault(registrytest.Healthy)
	stormPhase(t, c, sink, "registry-back", stormLoad{workers: 8, count: back, request: requests(up+hanging, false)}, nil, false)
}

// namedStep is one step of a test that builds on the ones before.
type namedStep struct {
	name string
	f    func(t *testing.T)
}

// deploymentStorm scales a Deployment from 0 to n with validating at zero:
// the ReplicaSet controller creates the pods (in its slow-start batches)
// and each is admitted by validating. The pods select a node label no node
// has, so they stay Pending: admission is what is measured, not the node.
func deploymentStorm(t *testing.T, c *cluster, sink *decisionSink, n int32) {
	ctx := context.Background()
	labels := map[string]string{"app": "storm"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "storm"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"admitfn.dev/storm": "nowhere"},
					Containers:   []corev1.Container{{Name: "c", Image: "busybox:1.36"}},
				},
			},
		},
	}
	// Created at zero replicas first: validating judges the Deployment
	// itself, which wakes it; the scale comes once it is at zero again.
	if _, err := c.Admin.AppsV1().Deployments(stormNamespace).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		policy := metav1.DeletePropagationForeground
		c.Admin.AppsV1().Deployments(stormNamespace).Delete(ctx, "storm", metav1.DeleteOptions{PropagationPolicy: &policy})
	}()
	waitAtZero(t, c, "validating", 120*time.Second)
	pods := watchServicePods(t, c, "validating")
	defer pods.stop()
	start := time.Now()
	scale := &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "storm", Namespace: stormNamespace}, Spec: autoscalingv1.ScaleSpec{Replicas: n}}
	if _, err := c.Admin.AppsV1().Deployments(stormNamespace).UpdateScale(ctx, "storm", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var created []corev1.Pod
	var all time.Duration
	harness.WaitFor(t, 120*time.Second, fmt.Sprintf("%d storm pods", n), func() error {
		list, err := c.Admin.CoreV1().Pods(stormNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=storm"})
		if err != nil {
			return err
		}
		created = list.Items
		if len(created) < int(n) {
			return fmt.Errorf("%d so far", len(created))
		}
		all = time.Since(start)
		return nil
	})
	events, err := c.Admin.CoreV1().Events(stormNamespace).List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedCreate"})
	if err != nil {
		t.Fatal(err)
	}
	var refusals []string
	for _, e := range events.Items {
		if strings.HasPrefix(e.InvolvedObject.Name, "storm-") && !e.LastTimestamp.Time.Before(start.Truncate(time.Second)) {
			refusals = append(refusals, fmt.Sprintf("×%d %s", e.Count, e.Message))
		}
	}
	pods.settle()
	started, timeline := pods.since(start)
	t.Logf("deployment 0 → %d: all %d pods admitted in %s; refused creates (retried by the ReplicaSet controller): %d; validating pods started: %d (%s)",
		n, len(created), all.Round(time.Millisecond), len(refusals), started, timeline)
	for _, r := range refusals {
		t.Errorf("a storm pod create was refused: %s", r)
	}
	var lost []string
	harness.WaitFor(t, 15*time.Second, "a CloudEvent for each storm pod", func() error {
		lost = lost[:0]
		for _, p := range created {
			if got := sink.decisions(p.Name); len(got) == 0 || !got[len(got)-1].Allowed {
				lost = append(lost, p.Name)
			}
		}
		if len(lost) > 0 {
			return fmt.Errorf("%d pods without an allowed event, e.g. %s", len(lost), lost[0])
		}
		return nil
	})
	t.Logf("deployment 0 → %d: each pod has its CloudEvent", n)
}
