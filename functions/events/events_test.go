package events

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/go-cmp/cmp"

	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/policy"
)

// receiver is a real CloudEvents HTTP receiver on loopback.
type receiver struct {
	mu     sync.Mutex
	events []cloudevents.Event
	got    chan struct{}
	url    string
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{got: make(chan struct{}, 100)}
	// Each request is decoded in its handler with the SDK's own HTTP
	// binding. (The SDK's receive handler hands requests to a loop through
	// an unbuffered channel; when that loop was not running yet the
	// handler blocked for good, and so did the server's Close.)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		e, err := cehttp.NewEventFromHTTPRequest(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.events = append(r.events, *e)
		r.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		r.got <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

func (r *receiver) wait(t *testing.T, n int) []cloudevents.Event {
	t.Helper()
	for range n {
		select {
		case <-r.got:
		case <-time.After(10 * time.Second):
			r.mu.Lock()
			got := len(r.events)
			r.mu.Unlock()
			t.Fatalf("received %d events, want %d", got, n)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]cloudevents.Event(nil), r.events...)
}

type counts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counts) add(outcome string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[outcome]++
}

func (c *counts) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

func (c *counts) get(outcome string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[outcome]
}

func decision(t *testing.T, images ...string) policy.Decision {
	t.Helper()
	p, err := policy.Parse([]byte(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: events}
spec:
  rules:
  - name: no-latest
    tags: {denyLatest: true, denyUntagged: true}
  - name: no-dev
    mode: warn
    tags: {deny: ["*-dev"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	req := policy.Request{Namespace: "team-a"}
	for _, img := range images {
		req.Images = append(req.Images, policy.Image{Ref: img})
	}
	return p.Evaluate(req, nil, time.Now())
}

func TestDecisionEvents(t *testing.T) {
	t.Parallel()
	r := newReceiver(t)
	var c counts
	s, err := New(Config{Sink: r.url, Source: "/apis/admitfn.dev/services/image-policy", Overrides: `{"extensions":{"cluster":"prod-eu"}}`, OnOutcome: c.add})
	if err != nil {
		t.Fatal(err)
	}
	for i, img := range []string{"nginx:1.17.1", "nginx", "app:1.0-dev"} {
		s.Decided(context.Background(), observe.Record{
			Handler: "validating", UID: []string{"u-allow", "u-deny", "u-warn"}[i], Kind: "Deployment",
			Namespace: "team-a", Name: "web", Operation: "CREATE", DryRun: i == 2, Images: []string{img}, Decision: decision(t, img),
		})
	}
	got := map[string]cloudevents.Event{}
	for _, e := range r.wait(t, 3) {
		got[e.ID()] = e
	}
	type summary struct {
		Type, Source, Subject, Cluster string
		Data                           Data
	}
	sum := func(e cloudevents.Event) summary {
		var d Data
		if err := e.DataAs(&d); err != nil {
			t.Fatal(err)
		}
		d.Reason = "" // checked by the policy tests
		cl, _ := e.Extensions()["cluster"].(string)
		return summary{e.Type(), e.Source(), e.Subject(), cl, d}
	}
	base := Data{Handler: "validating", Kind: "Deployment", Namespace: "team-a", Name: "web", Operation: "CREATE", Policy: "events"}
	with := func(uid string, allowed bool, result, rule, mode string, img string, v []Violation, dry bool) summary {
		d := base
		d.UID, d.Allowed, d.Result, d.Rule, d.Mode, d.Violations, d.DryRun = uid, allowed, result, rule, mode, v, dry
		d.Images = []ImageData{{Image: img}}
		return summary{"dev.admitfn.image." + result, "/apis/admitfn.dev/services/image-policy/handlers/validating", "team-a/web", "prod-eu", d}
	}
	want := map[string]summary{
		"u-allow": with("u-allow", true, "allowed", "none", "", "nginx:1.17.1", nil, false),
		"u-deny": with("u-deny", false, "denied", "no-latest", "enforce", "nginx",
			[]Violation{{Rule: "no-latest", Mode: "enforce", Image: "nginx", Problem: `names no tag, so the runtime pulls the mutable tag "latest"`}}, false),
		"u-warn": with("u-warn", true, "warned", "no-dev", "warn", "app:1.0-dev",
			[]Violation{{Rule: "no-dev", Mode: "warn", Image: "app:1.0-dev", Problem: `tag "1.0-dev" is denied (pattern "*-dev")`}}, true),
	}
	for id, w := range want {
		e, ok := got[id]
		if !ok {
			t.Errorf("no event %s", id)
			continue
		}
		if diff := cmp.Diff(w, sum(e)); diff != "" {
			t.Errorf("event %s (-want +got):\n%s", id, diff)
		}
	}
	s.Close(5 * time.Second) // waits for the workers to record their outcomes
	if c.get("sent") != 3 || c.get("dropped") != 0 {
		t.Errorf("outcomes %v, want 3 sent", c.snapshot())
	}
}

func TestSlowSinkDropsAndCounts(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var arrived atomic.Int32
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		<-release
	}))
	defer sink.Close()
	defer close(release)
	var c counts
	s, err := New(Config{Sink: sink.URL, Source: "/test", QueueSize: 4, SendTimeout: 30 * time.Second, OnOutcome: c.add})
	if err != nil {
		t.Fatal(err)
	}
	rec := observe.Record{Handler: "imagepolicy", Images: []string{"nginx"}, Decision: decision(t, "nginx")}
	for range 100 {
		s.Decided(context.Background(), rec)
	}
	// Two workers hold one event each at the hung sink, four wait in the
	// queue: the rest were dropped without waiting.
	if got := c.get("dropped"); got < 94 || got > 98 {
		t.Errorf("dropped %d of 100 with a hung sink, want 94 to 98", got)
	}
	s.Close(200 * time.Millisecond)
	if sent, failed, dropped := c.get("sent"), c.get("failed"), c.get("dropped"); sent+failed+dropped != 100 || sent != 0 {
		t.Errorf("after Close: sent %d failed %d dropped %d, want every event accounted for and none sent", sent, failed, dropped)
	}
	s.Decided(context.Background(), rec)
	if c.get("dropped")+c.get("failed") != 101 {
		t.Errorf("an event after Close was not counted as dropped: %v", c.snapshot())
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ cfg Config }{
		{Config{Sink: "http://127.0.0.1:1", Overrides: `{"extensions":`}},
		{Config{Sink: "http://127.0.0.1:1", Overrides: `{"extensions":{"Bad-Name":"x"}}`}},
	} {
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("New(%+v) succeeded, want an error", tc.cfg)
		}
	}
}

// BenchmarkDecidedWithDeadSink measures what a review pays for its event
// when the sink hangs: a queue insert or a drop, never a wait.
func BenchmarkDecidedWithDeadSink(b *testing.B) {
	release := make(chan struct{})
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer sink.Close()
	defer close(release)
	var c counts
	s, err := New(Config{Sink: sink.URL, Source: "/bench", QueueSize: 64, OnOutcome: c.add})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(10 * time.Millisecond)
	p := policy.Default()
	rec := observe.Record{Handler: "imagepolicy", Images: []string{"nginx"},
		Decision: p.Evaluate(policy.Request{Images: []policy.Image{{Ref: "nginx"}}}, nil, time.Now())}
	b.ReportAllocs()
	for b.Loop() {
		s.Decided(context.Background(), rec)
	}
	b.ReportMetric(float64(c.get("dropped"))/float64(b.N), "dropped/op")
}
