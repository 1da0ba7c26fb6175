// Package metrics exposes admitfn's Prometheus metrics on /metrics:
// decisions, review latency, the resolver's cache and registry calls,
// events and policy reloads.
package metrics

import (
	"context"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/admitfn/admitfn/functions/observe"
)

// Path is where the metrics are served.
const Path = "/metrics"

// Metrics holds admitfn's collectors in a registry of its own.
type Metrics struct {
	registry         *prometheus.Registry
	decisions        *prometheus.CounterVec
	latency          *prometheus.HistogramVec
	cache            *prometheus.CounterVec
	registryRequests *prometheus.CounterVec
	events           *prometheus.CounterVec
	reloads          *prometheus.CounterVec
}

// New registers the collectors, with Go runtime and process metrics.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "admitfn_decisions_total", Help: "Admission decisions by handler, deciding rule and result.",
		}, []string{"handler", "rule", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "admitfn_review_duration_seconds", Help: "Time from a decoded review to its decision.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"handler"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "admitfn_resolver_cache_total", Help: "Resolver lookups by cache result: hit, miss, stale.",
		}, []string{"result"}),
		registryRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "admitfn_registry_requests_total", Help: "HTTP requests to registries by status code (\"error\" when none came back).",
		}, []string{"code"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "admitfn_events_total", Help: "Decision CloudEvents by outcome: sent, failed, dropped (queue full).",
		}, []string{"outcome"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "admitfn_policy_reloads_total", Help: "Policy reloads by result: success, failure.",
		}, []string{"result"}),
	}
	m.registry.MustRegister(m.decisions, m.latency, m.cache, m.registryRequests, m.events, m.reloads,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// Decided implements observe.Observer.
func (m *Metrics) Decided(_ context.Context, r observe.Record) {
	m.decisions.WithLabelValues(r.Handler, r.Rule(), r.Result()).Inc()
	m.latency.WithLabelValues(r.Handler).Observe(r.Duration.Seconds())
}

// CacheResult counts a resolver lookup: "hit", "miss" or "stale".
func (m *Metrics) CacheResult(result string) { m.cache.WithLabelValues(result).Inc() }

// Event counts a CloudEvent outcome: "sent", "failed" or "dropped".
func (m *Metrics) Event(outcome string) { m.events.WithLabelValues(outcome).Inc() }

// Reload counts a policy reload: "success" or "failure".
func (m *Metrics) Reload(result string) { m.reloads.WithLabelValues(result).Inc() }

// RoundTripper counts the requests next makes by status code; give it to
// the resolver as its transport.
func (m *Metrics) RoundTripper(next http.RoundTripper) http.RoundTripper {
	return roundTripper{next: next, requests: m.registryRequests}
}

type roundTripper struct {
	next     http.RoundTripper
	requests *prometheus.CounterVec
}

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.next.RoundTrip(req)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	rt.requests.WithLabelValues(code).Inc()
	return resp, err
}
