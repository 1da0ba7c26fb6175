package metrics

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	dto "github.com/prometheus/client_model/go"

	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/metrics/metricstest"
	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/functions/resolver"
)

// scrape fetches /metrics from h and parses it.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, Path, nil))
	return metricstest.Parse(t, rec.Body)
}

func TestMetrics(t *testing.T) {
	m := New()
	reg := registrytest.New(t)
	reg.Push("app:v1", registrytest.Image(t, nil))
	ins, err := imageref.ParseHostPattern(reg.Host())
	if err != nil {
		t.Fatal(err)
	}
	settings := policy.Default().Registry
	settings.Insecure = []imageref.HostPattern{ins}
	res, err := resolver.New(settings, resolver.WithKeychain(authn.NewMultiKeychain()),
		resolver.WithTransport(m.RoundTripper(http.DefaultTransport.(*http.Transport).Clone())), resolver.WithCacheObserver(m.CacheResult))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, s := range []string{reg.Ref("app", ":v1"), reg.Ref("app", ":v1"), reg.Ref("app", ":missing")} {
		ref, err := imageref.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		res.Resolve(ctx, ref, policy.LevelDigest)
	}
	d := policy.Default().Evaluate(policy.Request{Images: []policy.Image{{Ref: "nginx"}}}, nil, time.Now())
	m.Decided(ctx, observe.Record{Handler: "imagepolicy", Decision: d, Duration: time.Millisecond})
	m.Decided(ctx, observe.Record{Handler: "validating", Decision: policy.Decision{Allowed: true}, Duration: time.Millisecond})
	m.Event("sent")
	m.Event("dropped")
	m.Reload("failure")

	f := scrape(t, m.Handler())
	got := map[string]float64{
		"denied imagepolicy/no-latest": metricstest.Value(f, "admitfn_decisions_total", map[string]string{"handler": "imagepolicy", "rule": "no-latest", "result": "denied"}),
		"allowed validating/none":      metricstest.Value(f, "admitfn_decisions_total", map[string]string{"handler": "validating", "rule": "none", "result": "allowed"}),
		"latency samples imagepolicy":  metricstest.Value(f, "admitfn_review_duration_seconds", map[string]string{"handler": "imagepolicy"}),
		"cache hit":                    metricstest.Value(f, "admitfn_resolver_cache_total", map[string]string{"result": "hit"}),
		"cache miss":                   metricstest.Value(f, "admitfn_resolver_cache_total", map[string]string{"result": "miss"}),
		"registry 404":                 metricstest.Value(f, "admitfn_registry_requests_total", map[string]string{"code": "404"}),
		"events dropped":               metricstest.Value(f, "admitfn_events_total", map[string]string{"outcome": "dropped"}),
		"reload failures":              metricstest.Value(f, "admitfn_policy_reloads_total", map[string]string{"result": "failure"}),
	}
	want := map[string]float64{
		"denied imagepolicy/no-latest": 1, "allowed validating/none": 1, "latency samples imagepolicy": 1,
		"cache hit": 1, "cache miss": 2, "registry 404": 1, "events dropped": 1, "reload failures": 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	if metricstest.Value(f, "admitfn_registry_requests_total", map[string]string{"code": "200"}) < 1 {
		t.Errorf("no successful registry request counted")
	}
	if _, ok := f["go_goroutines"]; !ok {
		t.Errorf("Go runtime metrics missing")
	}
}

// TestExposition checks what Prometheus reads back from the page: label
// values with every character the format escapes, cumulative histogram
// buckets, the sum and count, the runtime gauges, and the content type.
func TestExposition(t *testing.T) {
	t.Parallel()
	m := New()
	weird := "rule \"quoted\" \\ back\nslash"
	deny := policy.Decision{Violations: []policy.Violation{{Rule: weird, Mode: policy.Enforce}}}
	for _, d := range []time.Duration{50 * time.Microsecond, 3 * time.Millisecond, 3 * time.Millisecond, 20 * time.Second} {
		m.Decided(context.Background(), observe.Record{Handler: "validating", Decision: deny, Duration: d})
	}

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, Path, nil))
	if ct := rec.Header().Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	f := scrape(t, m.Handler())
	if got := metricstest.Value(f, "admitfn_decisions_total", map[string]string{"handler": "validating", "rule": weird, "result": "denied"}); got != 4 {
		t.Errorf("decisions of rule %q = %v, want 4", weird, got)
	}
	h := f["admitfn_review_duration_seconds"].GetMetric()[0].GetHistogram()
	buckets := map[float64]uint64{}
	for _, b := range h.GetBucket() {
		buckets[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	wantBuckets := map[float64]uint64{.0001: 1, .00025: 1, .0005: 1, .001: 1, .0025: 1, .005: 3, .01: 3, .025: 3, .05: 3,
		.1: 3, .25: 3, .5: 3, 1: 3, 2.5: 3, 5: 3, 10: 3, math.Inf(1): 4}
	if diff := cmp.Diff(wantBuckets, buckets); diff != "" {
		t.Errorf("cumulative buckets (-want +got):\n%s", diff)
	}
	if h.GetSampleCount() != 4 || h.GetSampleSum() < 20.006 || h.GetSampleSum() > 20.0061 {
		t.Errorf("count %d, sum %v; want 4 and 20.00605", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds"} {
		g := f[name]
		if g == nil || len(g.GetMetric()) != 1 {
			t.Errorf("%s missing", name)
			continue
		}
		if v := g.GetMetric()[0].GetGauge().GetValue() + g.GetMetric()[0].GetCounter().GetValue(); v <= 0 {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}

	rec = httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, Path, nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST %s: %d, Allow %q; want 405 and GET, HEAD", Path, rec.Code, rec.Header().Get("Allow"))
	}
}

// BenchmarkDecided is the cost metrics add to every review.
func BenchmarkDecided(b *testing.B) {
	m := New()
	r := observe.Record{Handler: "imagepolicy", Decision: policy.Decision{Allowed: true}, Duration: time.Millisecond}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		m.Decided(ctx, r)
	}
}
