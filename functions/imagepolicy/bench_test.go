package imagepolicy

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/functions/resolver"
	"github.com/admitfn/admitfn/functions/review"
)

func benchmarkHandler(b *testing.B, p *policy.Policy, body string) {
	res, err := resolver.New(p.Registry, resolver.WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		b.Fatal(err)
	}
	h := New(review.New(p, res), observe.Observers{})
	payload := []byte(body)
	serve := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, Path+"?timeout=10s", bytes.NewReader(payload))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := serve(); rec.Code != http.StatusOK { // warms the cache
		b.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if rec := serve(); rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
}

// BenchmarkReviewDefaultPolicy is a warm review with the embedded policy:
// two containers, no registry lookups.
func BenchmarkReviewDefaultPolicy(b *testing.B) {
	benchmarkHandler(b, policy.Default(), reviewJSON("default", "nginx:1.17.1", "busybox:1.36"))
}

// BenchmarkReviewResolvedWarm is a warm review of a policy that resolves
// tags: the digest comes from the cache.
func BenchmarkReviewResolvedWarm(b *testing.B) {
	reg := registrytest.New(b)
	reg.Push("app:v1", registrytest.Image(b, nil))
	p, err := policy.Parse([]byte(`
apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: ["` + reg.Host() + `"]}
  rules:
  - name: no-latest
    tags: {denyLatest: true, denyUntagged: true}
  - name: resolvable
    resolvable: true
    nonRoot: true
`))
	if err != nil {
		b.Fatal(err)
	}
	before := reg.ManifestRequests()
	benchmarkHandler(b, p, reviewJSON("default", reg.Ref("app", ":v1")))
	if got := reg.ManifestRequests() - before; got != 1 {
		b.Errorf("warm benchmark made %d manifest requests, want 1 (the warm-up)", got)
	}
}
