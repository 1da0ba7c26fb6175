package resolver

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/admitfn/admitfn/functions/imagefacts"
	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/internal/testclock"
	"github.com/admitfn/admitfn/functions/pullcreds"
	"github.com/admitfn/admitfn/functions/registrytest"
)

func settings(insecure ...string) imagefacts.Registry {
	s := imagefacts.Registry{
		Timeout: 5 * time.Second, CacheTTL: time.Minute, NegativeCacheTTL: 10 * time.Second,
		StaleWindow: time.Hour, CacheSize: 100,
		Platforms: []imagefacts.Platform{{OS: "linux", Arch: "amd64"}, {OS: "linux", Arch: "arm64"}},
	}
	for _, h := range insecure {
		p, err := imageref.ParseHostPattern(h)
		if err != nil {
			panic(err)
		}
		s.Insecure = append(s.Insecure, p)
	}
	return s
}

func mustHostPattern(t *testing.T, h string) imageref.HostPattern {
	t.Helper()
	p, err := imageref.ParseHostPattern(h)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newResolver(t *testing.T, reg *registrytest.Registry, c *testclock.Clock) *Resolver {
	t.Helper()
	r, err := New(settings(reg.Host()), WithClock(c.Now), WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func ref(t *testing.T, s string) imageref.Ref {
	t.Helper()
	r, err := imageref.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestResolveAgainstRegistry(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	created := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	plain := reg.Push("app:v1", registrytest.Image(t, nil))
	rootImg := reg.Push("root:v1", registrytest.Image(t, func(cf *v1.ConfigFile) { cf.Config.User = "" }))
	old := reg.Push("old:v1", registrytest.Image(t, func(cf *v1.ConfigFile) {
		cf.Created = v1.Time{Time: created}
		cf.Config.Labels = map[string]string{"org.opencontainers.image.source": "https://example.test/old"}
	}))
	idx := reg.PushIndex("multi:v1", []v1.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64", Variant: "v8"},
		{OS: "linux", Architecture: "s390x"},
	}, func(cf *v1.ConfigFile) { cf.Config.User = "1000" })
	c := testclock.New(time.Now())
	r := newResolver(t, reg, c)
	ctx := context.Background()

	t.Run("tag resolves by HEAD", func(t *testing.T) {
		before := reg.Requests()
		f := r.Resolve(ctx, ref(t, reg.Ref("app", ":v1")), imagefacts.LevelDigest)
		if f.Err != nil || f.NotFound || f.Digest != plain {
			t.Fatalf("Resolve = %+v, want digest %s", f, plain)
		}
		after := reg.Requests()
		if after["HEAD manifests"]-before["HEAD manifests"] != 1 || after["GET manifests"] != before["GET manifests"] {
			t.Errorf("requests before %v after %v: want one HEAD and no GET of the manifest", before, after)
		}
	})
	t.Run("missing tag is not found", func(t *testing.T) {
		f := r.Resolve(ctx, ref(t, reg.Ref("app", ":nope")), imagefacts.LevelDigest)
		if !f.NotFound || f.Err != nil {
			t.Fatalf("Resolve = %+v, want NotFound", f)
		}
	})
	t.Run("missing repository is not found", func(t *testing.T) {
		f := r.Resolve(ctx, ref(t, reg.Ref("nobody/here", ":v1")), imagefacts.LevelConfig)
		if !f.NotFound || f.Err != nil {
			t.Fatalf("Resolve = %+v, want NotFound", f)
		}
	})
	t.Run("root user config", func(t *testing.T) {
		f := r.Resolve(ctx, ref(t, reg.Ref("root", ":v1")), imagefacts.LevelConfig)
		if f.Err != nil || f.Digest != rootImg || len(f.Configs) != 1 || f.Configs[0].User != "" {
			t.Fatalf("Resolve = %+v, want one config with an empty user", f)
		}
	})
	t.Run("old image config", func(t *testing.T) {
		f := r.Resolve(ctx, ref(t, reg.Ref("old", ":v1")), imagefacts.LevelConfig)
		if f.Err != nil || f.Digest != old || len(f.Configs) != 1 {
			t.Fatalf("Resolve = %+v", f)
		}
		if got := f.Configs[0]; !got.Created.Equal(created) || got.Labels["org.opencontainers.image.source"] == "" || got.Platform.String() != "linux/amd64" {
			t.Errorf("config = %+v, want created %v, the source label, linux/amd64", got, created)
		}
	})
	t.Run("index digest and inspected platforms", func(t *testing.T) {
		f := r.Resolve(ctx, ref(t, reg.Ref("multi", ":v1")), imagefacts.LevelConfig)
		if f.Err != nil || f.Digest != idx {
			t.Fatalf("Resolve = %+v, want index digest %s", f, idx)
		}
		if len(f.Platforms) != 3 {
			t.Errorf("platforms = %v, want 3", f.Platforms)
		}
		var inspected []string
		for _, c := range f.Configs {
			inspected = append(inspected, c.Platform.String()+" user "+c.User)
		}
		want := "linux/amd64 user 1000,linux/arm64/v8 user 1000"
		if got := strings.Join(inspected, ","); got != want {
			t.Errorf("inspected configs = %s, want %s (s390x is not among the policy's platforms)", got, want)
		}
	})
	t.Run("digest reference", func(t *testing.T) {
		f := r.Resolve(ctx, ref(t, reg.Ref("app", "@"+plain)), imagefacts.LevelConfig)
		if f.Err != nil || f.Digest != plain {
			t.Fatalf("Resolve = %+v", f)
		}
	})
}

func TestMovedAndDeletedTags(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	first := reg.Push("app:stable", registrytest.Image(t, nil))
	c := testclock.New(time.Now())
	r := newResolver(t, reg, c)
	ctx := context.Background()
	app := ref(t, reg.Ref("app", ":stable"))

	if f := r.Resolve(ctx, app, imagefacts.LevelDigest); f.Digest != first {
		t.Fatalf("first resolve = %+v, want %s", f, first)
	}
	second := reg.Push("app:stable", registrytest.Image(t, nil))
	if f := r.Resolve(ctx, app, imagefacts.LevelDigest); f.Digest != first {
		t.Errorf("within the TTL the cached digest stands: got %+v, want %s", f, first)
	}
	c.Advance(2 * time.Minute)
	if f := r.Resolve(ctx, app, imagefacts.LevelDigest); f.Digest != second {
		t.Errorf("after the TTL the moved tag resolves anew: got %+v, want %s", f, second)
	}
	reg.Delete("app:stable")
	c.Advance(2 * time.Minute)
	if f := r.Resolve(ctx, app, imagefacts.LevelDigest); !f.NotFound {
		t.Errorf("deleted tag: got %+v, want NotFound", f)
	}
	// "Not found" is cached for the shorter negative TTL only.
	reg.Push("app:stable", registrytest.Image(t, nil))
	c.Advance(11 * time.Second)
	if f := r.Resolve(ctx, app, imagefacts.LevelDigest); f.NotFound || f.Digest == "" {
		t.Errorf("re-pushed tag after the negative TTL: got %+v, want a digest", f)
	}
}

func TestOneRegistryCallForConcurrentLookups(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	want := reg.Push("busy:v1", registrytest.Image(t, nil))
	reg.ResetCounts()
	r := newResolver(t, reg, testclock.New(time.Now()))
	busy := ref(t, reg.Ref("busy", ":v1"))

	const n = 1000
	var wg sync.WaitGroup
	start := make(chan struct{})
	digests := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			digests[i] = r.Resolve(context.Background(), busy, imagefacts.LevelConfig).Digest
		}()
	}
	close(start)
	wg.Wait()
	for i, d := range digests {
		if d != want {
			t.Fatalf("lookup %d got digest %q, want %q", i, d, want)
		}
	}
	if got := reg.ManifestRequests(); got != 1 {
		t.Errorf("registry saw %d manifest requests for %d concurrent lookups, want 1 (all: %v)", got, n, reg.Requests())
	}
}

// TestLookupAfterAFlightEnds makes the second of two lookups miss the
// cache while the first one's registry call is still to come, and ask for
// its own call only after that call has ended and been cached: it must
// find the answer there, not call the registry again.
func TestLookupAfterAFlightEnds(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	reg.Push("race:v1", registrytest.Image(t, nil))
	reg.ResetCounts()
	firstMissed, secondMissed, firstDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var misses atomic.Int32
	r, err := New(settings(reg.Host()), WithKeychain(authn.NewMultiKeychain()), WithCacheObserver(func(result string) {
		if result != "miss" {
			return
		}
		switch misses.Add(1) {
		case 1: // the first lookup waits until the second has missed too
			close(firstMissed)
			<-secondMissed
		case 2: // the second waits until the first has its answer
			close(secondMissed)
			<-firstDone
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	race := ref(t, reg.Ref("race", ":v1"))
	results := make(chan imagefacts.Facts, 2)
	go func() { results <- r.Resolve(context.Background(), race, imagefacts.LevelDigest) }()
	<-firstMissed
	go func() { results <- r.Resolve(context.Background(), race, imagefacts.LevelDigest) }()
	first := <-results
	close(firstDone)
	second := <-results
	if first.Digest == "" || second.Digest != first.Digest {
		t.Fatalf("digests %q and %q, want one digest twice (errors %v, %v)", first.Digest, second.Digest, first.Err, second.Err)
	}
	if got := reg.ManifestRequests(); got != 1 {
		t.Errorf("registry saw %d manifest requests, want 1: the second lookup should find the first's answer in the cache", got)
	}
}

func TestRegistryFailures(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	want := reg.Push("app:v1", registrytest.Image(t, nil))
	c := testclock.New(time.Now())
	s := settings(reg.Host())
	s.Timeout = time.Second // bounds the hung lookup that outlives its caller
	r, err := New(s, WithClock(c.Now), WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		t.Fatal(err)
	}
	app := ref(t, reg.Ref("app", ":v1"))
	ctx := context.Background()

	if f := r.Resolve(ctx, app, imagefacts.LevelDigest); f.Digest != want {
		t.Fatalf("warm-up resolve = %+v", f)
	}
	reg.SetFault(registrytest.ServerError)
	c.Advance(2 * time.Minute) // past the TTL, within the stale window
	f := r.Resolve(ctx, app, imagefacts.LevelDigest)
	if f.Err != nil || !f.Stale || f.Digest != want {
		t.Errorf("registry failing within stale window: got %+v, want stale digest %s", f, want)
	}
	c.Advance(2 * time.Hour) // past the stale window
	f = r.Resolve(ctx, app, imagefacts.LevelDigest)
	if f.Err == nil || f.Stale {
		t.Errorf("registry failing past stale window: got %+v, want an error", f)
	}
	other := ref(t, reg.Ref("other", ":v1"))
	if f := r.Resolve(ctx, other, imagefacts.LevelDigest); f.Err == nil || f.NotFound {
		t.Errorf("uncached ref with failing registry: got %+v, want an error, not NotFound", f)
	}

	reg.SetFault(registrytest.Hang)
	dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	hung := ref(t, reg.Ref("hung", ":v1"))
	f = r.Resolve(dctx, hung, imagefacts.LevelDigest)
	if f.Err == nil || !strings.Contains(f.Err.Error(), "deadline") {
		t.Errorf("hanging registry: got %+v, want a deadline error", f)
	}
	if dctx.Err() == nil {
		t.Errorf("Resolve returned before the caller's deadline with %+v", f)
	}
}

func TestPlainHTTPNeedsPolicy(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	reg.Push("app:v1", registrytest.Image(t, nil))
	// Listed as internal (it is on loopback), not as insecure.
	s := settings()
	s.Internal = []imageref.HostPattern{mustHostPattern(t, reg.Host())}
	r, err := New(s, WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		t.Fatal(err)
	}
	f := r.Resolve(context.Background(), ref(t, reg.Ref("app", ":v1")), imagefacts.LevelDigest)
	if f.Err == nil || !strings.Contains(f.Err.Error(), "spec.registry.insecure") {
		t.Errorf("Resolve = %+v, want an error saying plain HTTP needs spec.registry.insecure", f)
	}
}

func TestCacheIsBounded(t *testing.T) {
	t.Parallel()
	c := newCache(3, 1<<20)
	for i := range 10 {
		c.put(entry{key: string(rune('a' + i))})
	}
	if c.len() != 3 {
		t.Errorf("cache holds %d entries, want 3", c.len())
	}
	if _, ok := c.get("j"); !ok {
		t.Errorf("newest entry evicted")
	}
	if _, ok := c.get("a"); ok {
		t.Errorf("oldest entry kept")
	}
}

// TestCacheIsBoundedInBytes fills the cache with answers carrying large
// signatures: it keeps at most its byte bound however many entries it
// may hold.
func TestCacheIsBoundedInBytes(t *testing.T) {
	t.Parallel()
	const bound = 1 << 20
	c := newCache(4096, bound)
	big := imagefacts.Facts{Signatures: []imagefacts.Signature{{Payload: make([]byte, 64<<10)}}}
	for i := range 100 {
		c.put(entry{key: fmt.Sprint(i), facts: big})
	}
	if c.bytes > bound {
		t.Errorf("cache holds %d bytes, more than its %d bound", c.bytes, bound)
	}
	if n := c.len(); n < 10 || n > bound/(64<<10) {
		t.Errorf("cache holds %d entries of 64 KiB under a 1 MiB bound, want 10 to 16", n)
	}
	if _, ok := c.get("99"); !ok {
		t.Errorf("newest entry evicted")
	}
}

// TestSignedImagesAreCachedAsSigned: an image whose only signature is a
// bundle among its referrers (keyless, as cosign v3 signs) is a positive
// answer, kept for cacheTTL; an unsigned one for negativeCacheTTL only.
func TestSignedImagesAreCachedAsSigned(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t, registrytest.WithReferrers())
	signed := reg.Push("signed:v1", registrytest.Image(t, nil))
	reg.AttachBundle("signed", signed, []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","dsseEnvelope":{"payload":"e30=","payloadType":"application/vnd.in-toto+json"}}`))
	reg.Push("unsigned:v1", registrytest.Image(t, nil))
	c := testclock.New(time.Now())
	r := newResolver(t, reg, c) // cacheTTL 1m, negativeCacheTTL 10s
	ctx := context.Background()
	for _, tc := range []struct {
		repo     string
		cachedAt time.Duration // past negativeCacheTTL, within cacheTTL
		cached   bool
	}{{"signed", 30 * time.Second, true}, {"unsigned", 30 * time.Second, false}} {
		t.Run(tc.repo, func(t *testing.T) {
			if f := r.Resolve(ctx, ref(t, reg.Ref(tc.repo, ":v1")), imagefacts.LevelSignatures); f.Err != nil || f.Malformed != nil {
				t.Fatalf("Resolve = %+v", f)
			}
			c.Advance(tc.cachedAt)
			defer c.Advance(-tc.cachedAt)
			before := reg.ManifestRequests()
			r.Resolve(ctx, ref(t, reg.Ref(tc.repo, ":v1")), imagefacts.LevelSignatures)
			if asked := reg.ManifestRequests() > before; asked == tc.cached {
				t.Errorf("%s after %v: registry asked again = %v, want %v", tc.repo, tc.cachedAt, asked, !tc.cached)
			}
		})
	}
}

// TestExpiredTokenIsRenewed: a registry's bearer token expires between two
// lookups; the second fetches a new one instead of failing as refused.
func TestExpiredTokenIsRenewed(t *testing.T) {
	t.Parallel()
	creds := registrytest.Credentials{Username: "puller", Password: "pw"}
	reg := registrytest.New(t, registrytest.WithTokenAuth(creds))
	reg.Push("private:v1", registrytest.Image(t, nil))
	c := testclock.New(time.Now())
	r, err := New(settings(reg.Host()), WithClock(c.Now), WithKeychain(staticKeychain{authn.FromConfig(authn.AuthConfig{Username: creds.Username, Password: creds.Password})}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 2 {
		if f := r.Resolve(ctx, ref(t, reg.Ref("private", ":v1")), imagefacts.LevelConfig); f.Err != nil || f.Unauthorized || len(f.Configs) != 1 {
			t.Fatalf("lookup %d: %+v", i+1, f)
		}
		reg.ExpireTokens()
		c.Advance(2 * time.Minute) // past cacheTTL: ask the registry again
	}
}

// staticKeychain answers every resource with one authenticator.
type staticKeychain struct{ a authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.a, nil }

// TestCredentialsStayWithTheirRequest: an answer learnt with one request's
// credentials is never given to a request without them (another tenant's
// pod, naming the same private image right after); a request's
// credentials are tried in order, as the kubelet tries them.
func TestCredentialsStayWithTheirRequest(t *testing.T) {
	t.Parallel()
	right := registrytest.Credentials{Username: "team-a", Password: "a-secret-password"}
	reg := registrytest.New(t, registrytest.WithBasicAuth(right))
	reg.Push("private/app:v1", registrytest.Image(t, nil))
	c := testclock.New(time.Now())
	r := newResolver(t, reg, c) // no credentials of its own
	keyring := func(creds ...registrytest.Credentials) pullcreds.Keyrings {
		var k pullcreds.Keyring
		for i, cr := range creds {
			// One key each: two entries under one key are one
			// config's, tried in map order.
			if err := k.Add(fmt.Sprint("secret ", i), pullcreds.Config{reg.Host() + fmt.Sprintf("/private%s", strings.Repeat("/", i)): {Username: cr.Username, Password: cr.Password}}); err != nil {
				t.Fatal(err)
			}
		}
		return pullcreds.Keyrings{&k}
	}
	wrong := registrytest.Credentials{Username: "team-b", Password: "b-wrong"}
	img := ref(t, reg.Ref("private/app", ":v1"))
	tests := []struct {
		name       string
		ctx        context.Context
		authorized bool
	}{
		{"team A's Secret", WithCredentials(context.Background(), keyring(right)), true},
		{"right after, a pod with no Secret", context.Background(), false},
		{"a pod with another Secret", WithCredentials(context.Background(), keyring(wrong)), false},
		{"a wrong Secret, then the right one", WithCredentials(context.Background(), keyring(right, wrong)), true},
		{"team A's Secret again: from the cache", WithCredentials(context.Background(), keyring(right)), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := r.Resolve(tt.ctx, img, imagefacts.LevelConfig)
			if got := !f.Unauthorized && f.Err == nil && len(f.Configs) == 1; got != tt.authorized {
				t.Errorf("read the image = %v, want %v: %+v", got, tt.authorized, f)
			}
			if f.Err != nil && (strings.Contains(f.Err.Error(), right.Password) || strings.Contains(f.Err.Error(), wrong.Password)) {
				t.Errorf("the error holds a password: %v", f.Err)
			}
		})
	}
}
