package review

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/functions/resolver"
)

func TestBudget(t *testing.T) {
	tests := []struct {
		param string
		cap   time.Duration
		want  time.Duration
	}{
		{"30s", 10 * time.Second, 10 * time.Second},
		{"10s", 10 * time.Second, 9 * time.Second},
		{"2s", 10 * time.Second, 1600 * time.Millisecond},
		{"", 10 * time.Second, 10 * time.Second},
		{"garbage", 5 * time.Second, 5 * time.Second},
		{"-3s", 5 * time.Second, 5 * time.Second},
	}
	for _, tc := range tests {
		if got := Allowance(tc.param, tc.cap); got != tc.want {
			t.Errorf("Allowance(%q, %v) = %v, want %v", tc.param, tc.cap, got, tc.want)
		}
	}
}

func resolvablePolicy(t testing.TB, host string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(fmt.Sprintf(`
apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: [%q]}
  rules:
  - name: no-latest
    tags: {denyLatest: true, denyUntagged: true}
  - name: resolvable
    images: ["%s/**"]
    resolvable: true
`, host, host)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReviewResolvesEachImageOnce(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	digest := reg.Push("app:v1", registrytest.Image(t, nil))
	p := resolvablePolicy(t, reg.Host())
	rv := registryReviewer(t, p)
	reg.ResetCounts()
	img := reg.Ref("app", ":v1")
	d := rv.Review(context.Background(), Budget{}, policy.Request{Namespace: "default", Images: []policy.Image{
		{Ref: img, Field: "spec.containers[0].image"},
		{Ref: img, Field: "spec.containers[1].image"},
		{Ref: "nginx:1.17.1", Field: "spec.containers[2].image"},
	}})
	if !d.Allowed || d.Digests[img] != digest {
		t.Errorf("Review = %+v, want allowed with digest %s", d, digest)
	}
	if got := reg.ManifestRequests(); got != 1 {
		t.Errorf("manifest requests = %d, want 1", got)
	}

	d = rv.Review(context.Background(), Budget{}, policy.Request{Namespace: "default", Images: []policy.Image{{Ref: reg.Ref("app", ":gone")}}})
	if d.Allowed || !strings.Contains(d.Reason(), `tag "gone" was not found`) {
		t.Errorf("missing tag: Allowed=%v Reason=%q, want a denial saying it was not found", d.Allowed, d.Reason())
	}
}

// TestConcurrentReviewsShareOneLookup sends 1000 concurrent reviews of one
// uncached tag through the reviewer and counts the registry's requests.
func TestConcurrentReviewsShareOneLookup(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	reg.Push("hot:v1", registrytest.Image(t, nil))
	p := resolvablePolicy(t, reg.Host())
	rv := registryReviewer(t, p, resolver.WithTransport(http.DefaultTransport.(*http.Transport).Clone()))
	reg.ResetCounts()
	req := policy.Request{Namespace: "default", Images: []policy.Image{{Ref: reg.Ref("hot", ":v1")}}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	denied := 0
	start := make(chan struct{})
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if d := rv.Review(context.Background(), Budget{}, req); !d.Allowed {
				mu.Lock()
				denied++
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if denied != 0 {
		t.Errorf("%d of 1000 reviews denied", denied)
	}
	if got := reg.ManifestRequests(); got != 1 {
		t.Errorf("registry saw %d manifest requests for 1000 concurrent reviews, want 1", got)
	}
}

// deadlines is a FactSource recording the deadline of each lookup.
type deadlines struct {
	mu   sync.Mutex
	seen []time.Duration // time left at the lookup; -1 when none
}

func (d *deadlines) Resolve(ctx context.Context, _ imageref.Ref, _ policy.Level) policy.Facts {
	left := time.Duration(-1)
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	d.mu.Lock()
	d.seen = append(d.seen, left)
	d.mu.Unlock()
	return policy.Facts{Digest: "sha256:" + strings.Repeat("0", 64)}
}

// TestBoundReachesLookups checks that a review bound with the apiserver's
// ?timeout= gives its registry lookups the Budget: the timeout less its
// margin, capped by the policy's registry timeout.
func TestBoundReachesLookups(t *testing.T) {
	t.Parallel()
	p := resolvablePolicy(t, "registry.example") // registry timeout: the default 10s
	policyCap := p.Registry.Timeout
	tests := []struct {
		name          string
		bound         bool
		timeoutParam  string
		wantLow, want time.Duration
	}{
		{"apiserver's 2s", true, "2s", 1500 * time.Millisecond, 1600 * time.Millisecond},
		{"apiserver's 30s, capped by the policy", true, "30s", policyCap - 100*time.Millisecond, policyCap},
		{"no timeout parameter", true, "", policyCap - 100*time.Millisecond, policyCap},
		{"not bound", false, "", -1, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := &deadlines{}
			rv := New(p, src)
			var b Budget
			if tt.bound {
				b = rv.BudgetFor(tt.timeoutParam)
			}
			rv.Review(context.Background(), b, policy.Request{Namespace: "default", Images: []policy.Image{{Ref: "registry.example/app:v1"}}})
			if len(src.seen) != 1 {
				t.Fatalf("%d lookups, want 1", len(src.seen))
			}
			if left := src.seen[0]; left < tt.wantLow || left > tt.want {
				t.Errorf("lookup had %v left, want %v to %v", left, tt.wantLow, tt.want)
			}
		})
	}
}

// TestNameDeniedImagesAreNotLookedUp: an image an enforce rule denies by
// its name alone is never looked up, so a reference cannot make admitfn
// contact its registry; the same image under a break-glass claim is.
func TestNameDeniedImagesAreNotLookedUp(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	reg.Push("app:latest", registrytest.Image(t, nil))
	reg.Push("app:v1", registrytest.Image(t, nil))
	p, err := policy.Parse([]byte(fmt.Sprintf(`
apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: [%[1]q]}
  breakGlass: {annotation: break-glass.image-policy.k8s.io/reason, namespaces: ["*"]}
  rules:
  - name: no-latest
    tags: {denyLatest: true}
  - name: resolvable
    images: ["%[1]s/**"]
    resolvable: true
`, reg.Host())))
	if err != nil {
		t.Fatal(err)
	}
	rv := registryReviewer(t, p)
	tests := []struct {
		name        string
		image       string
		annotations map[string]string
		requests    int
		allowed     bool
	}{
		{"denied by name: no lookup", reg.Ref("app", ":latest"), nil, 0, false},
		{"allowed by name: looked up", reg.Ref("app", ":v1"), nil, 1, true},
		{"denied by name, break-glass claimed: looked up for the audit", reg.Ref("app", ":latest"),
			map[string]string{"break-glass.image-policy.k8s.io/reason": "incident 42"}, 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg.ResetCounts()
			d := rv.Review(context.Background(), Budget{}, policy.Request{Namespace: "default", Annotations: tc.annotations,
				Images: []policy.Image{{Ref: tc.image, Field: "spec.containers[0].image"}}})
			if d.Allowed != tc.allowed {
				t.Errorf("Allowed = %v (%s), want %v", d.Allowed, d.Reason(), tc.allowed)
			}
			if got := reg.ManifestRequests(); got != tc.requests {
				t.Errorf("manifest requests = %d, want %d", got, tc.requests)
			}
		})
	}
}

// TestBudgetRunsOnTheReviewersClock: the time a review has already spent
// is read from the injected clock, not the wall clock.
func TestBudgetRunsOnTheReviewersClock(t *testing.T) {
	t.Parallel()
	p := resolvablePolicy(t, "registry.example")
	now := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	src := &deadlines{}
	rv := New(p, src, WithClock(func() time.Time { return now }))
	b := rv.BudgetFor("10s") // 9s after the margin
	now = now.Add(5 * time.Second)
	rv.Review(context.Background(), b, policy.Request{Namespace: "default", Images: []policy.Image{{Ref: "registry.example/app:v1"}}})
	if len(src.seen) != 1 {
		t.Fatalf("%d lookups, want 1", len(src.seen))
	}
	if left := src.seen[0]; left < 3900*time.Millisecond || left > 4*time.Second {
		t.Errorf("lookup had %v left, want 4s: 9s less the 5s the clock says have passed", left)
	}
}

// TestSnapshotKeepsItsPolicy: a snapshot judges by the policy in force
// when it was taken, though another is put in force before it judges —
// what lets a handler decode a request and judge it by one policy.
func TestSnapshotKeepsItsPolicy(t *testing.T) {
	t.Parallel()
	parse := func(doc string) *policy.Policy {
		t.Helper()
		p, err := policy.Parse([]byte("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\n" + doc))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	strict := parse("metadata: {name: strict}\nspec:\n  rules:\n  - {name: no-busybox, repositories: {deny: [busybox]}}\n")
	lax := parse("metadata: {name: lax}\nspec:\n  rules:\n  - {name: no-redis, repositories: {deny: [redis]}}\n")
	rv := New(strict, nil)
	snap := rv.Snapshot()
	rv.Set(lax, nil)
	req := policy.Request{Namespace: "default", Images: []policy.Image{{Ref: "busybox:1.36"}}}
	if d := snap.Review(context.Background(), Budget{}, req); d.Allowed || d.Policy != "strict" || snap.Policy().Name != "strict" {
		t.Errorf("snapshot judged by %q (allowed=%v); want the policy in force when it was taken, strict", d.Policy, d.Allowed)
	}
	if d := rv.Review(context.Background(), Budget{}, req); !d.Allowed || d.Policy != "lax" {
		t.Errorf("a new review judged by %q (allowed=%v); want lax", d.Policy, d.Allowed)
	}
}

// registryReviewer is a reviewer of p asking the registries p names, with
// no credentials but the request's (none of the machine's docker config).
func registryReviewer(t testing.TB, p *policy.Policy, opts ...resolver.Option) *Reviewer {
	t.Helper()
	res, err := resolver.New(p.Registry, append([]resolver.Option{resolver.WithKeychain(authn.NewMultiKeychain())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return New(p, res)
}
