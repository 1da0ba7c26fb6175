// Package resolver asks container registries about images, through
// go-containerregistry: HEAD for tag → digest (it does not count against pull
// limits), the manifest and config only when a rule needs them. Answers are
// cached, concurrent lookups of one reference share one registry call, and a
// failing registry is covered by stale answers within the policy's window.
package resolver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/singleflight"

	"github.com/admitfn/admitfn/functions/egress"
	"github.com/admitfn/admitfn/functions/imagefacts"
	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/internal/httpx"
	"github.com/admitfn/admitfn/functions/readcap"
)

// Resolver fetches image facts from registries. It is safe for concurrent
// use.
type Resolver struct {
	settings imagefacts.Registry
	keychain authn.Keychain
	// node gives the node's credentials from its kubelet's credential
	// provider plugins; nil without.
	node      NodeCredentials
	transport http.RoundTripper
	now       func() time.Time
	userAgent string
	onCache   func(result string)
	onFailure func(ref string, detail error)

	// puller asks with the resolver's own credentials (the keychain:
	// the node's); pullerOptions make pullers for a request's.
	puller        *remote.Puller
	pullerOptions []remote.Option
	cache         *cache
	group         singleflight.Group
	// flights holds a token per lookup in flight (maxLookups).
	flights chan struct{}
}

// Option configures a Resolver.
type Option func(*Resolver)

// WithKeychain sets where registry credentials come from (default
// authn.DefaultKeychain: the docker config mounted in the pod).
func WithKeychain(k authn.Keychain) Option { return func(r *Resolver) { r.keychain = k } }

// WithTransport sets the HTTP transport to registries.
func WithTransport(t http.RoundTripper) Option { return func(r *Resolver) { r.transport = t } }

// WithClock sets the clock used for cache ages.
func WithClock(now func() time.Time) Option { return func(r *Resolver) { r.now = now } }

// WithCacheObserver is told of every lookup's cache result: "hit", "miss"
// or "stale".
func WithCacheObserver(f func(result string)) Option { return func(r *Resolver) { r.onCache = f } }

// WithFailureLog is told of every failed lookup with the underlying error,
// which reasons leave out (they say only what kind of failure it was).
func WithFailureLog(f func(ref string, detail error)) Option {
	return func(r *Resolver) { r.onFailure = f }
}

// WithUserAgent sets the User-Agent sent to registries.
func WithUserAgent(ua string) Option { return func(r *Resolver) { r.userAgent = ua } }

// New returns a Resolver for the policy's registry settings. It makes no
// network call.
func New(settings imagefacts.Registry, opts ...Option) (*Resolver, error) {
	r := &Resolver{
		settings:  settings,
		keychain:  authn.DefaultKeychain,
		now:       time.Now,
		userAgent: "admitfn",
		onCache:   func(string) {},
		onFailure: func(string, error) {},
	}
	for _, o := range opts {
		o(r)
	}
	if r.transport == nil {
		r.transport = NewTransport(settings)
	}
	size := settings.CacheSize
	if size < 1 {
		size = 1
	}
	r.cache = newCache(size, maxCachedBytes)
	r.flights = make(chan struct{}, maxLookups)
	r.pullerOptions = []remote.Option{
		// Every body is charged to the lookup's byte budget
		// (readcap), token answers included.
		remote.WithTransport(schemeGuard{next: readcap.Transport{Next: r.transport}, insecure: settings.IsInsecure}),
		remote.WithUserAgent(r.userAgent),
		// The review deadline bounds the whole lookup; one quick retry of
		// a temporary failure is all it has room for.
		remote.WithRetryBackoff(remote.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Steps: 2}),
	}
	p, err := remote.NewPuller(append([]remote.Option{remote.WithAuthFromKeychain(r.keychain)}, r.pullerOptions...)...)
	if err != nil {
		return nil, err
	}
	r.puller = p
	return r, nil
}

// NewTransport is the transport to registries: go-containerregistry's
// defaults, with connections to inward addresses (loopback, link-local,
// private) refused unless the policy lists the registry as internal
// (package egress).
func NewTransport(settings imagefacts.Registry) *http.Transport {
	t := remote.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = egress.DialContext(func(hostport string) bool {
		if settings.IsInternal(hostport) {
			return true
		}
		host, port, err := net.SplitHostPort(hostport)
		return err == nil && (port == "443" || port == "80") && settings.IsInternal(host)
	})
	return t
}

// Close drops the resolver's idle registry connections. Lookups still in
// flight finish within the registry timeout.
func (r *Resolver) Close() {
	if c, ok := r.transport.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// Resolve returns what the registry says about ref, to the level asked. It
// never returns an error: failures are in Facts.Err, so each rule can apply
// its own onRegistryError. ctx bounds how long the caller waits; the shared
// lookup itself is bounded by the policy's registry timeout, so a caller
// that gives up does not cancel it for the others.
func (r *Resolver) Resolve(ctx context.Context, ref imageref.Ref, level imagefacts.Level) imagefacts.Facts {
	if level == imagefacts.LevelName {
		return imagefacts.Facts{Level: imagefacts.LevelName}
	}
	creds := requestCredentials(ctx, ref)
	key := cacheKey(ref, level, creds.key)
	if f, ok := r.fresh(ref, level, creds.key); ok {
		r.onCache("hit")
		return f
	}
	r.onCache("miss")
	ch := r.group.DoChan(key, func() (facts any, _ error) {
		// singleflight re-raises a panic of DoChan's function in a
		// goroutine of its own, where nothing can recover it: a defect in
		// one lookup would end the process. It is a failed lookup instead.
		defer httpx.Recovered(ctx, func(err error) { facts = imagefacts.Facts{Level: level, Err: err} })
		// A flight for key may have ended, its answer cached, between the
		// miss above and this one starting.
		if f, ok := r.fresh(ref, level, creds.key); ok {
			return f, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.settings.Timeout)
		defer cancel()
		return r.lookup(fctx, key, ref, level, creds), nil
	})
	select {
	case res := <-ch:
		return res.Val.(imagefacts.Facts)
	case <-ctx.Done():
		err := fmt.Errorf("registry %s did not answer before the review deadline: %w", ref.Registry, ctx.Err())
		return r.staleOr(key, imagefacts.Facts{Level: level, Err: err})
	}
}

// fresh returns a cached answer within its TTL, at the level asked or more,
// learnt with the same credentials.
func (r *Resolver) fresh(ref imageref.Ref, level imagefacts.Level, credsKey string) (imagefacts.Facts, bool) {
	now := r.now()
	for l := level; l <= imagefacts.LevelAttestations; l++ {
		if e, ok := r.cache.get(cacheKey(ref, l, credsKey)); ok && now.Before(e.expires) {
			return e.facts, true
		}
	}
	return imagefacts.Facts{}, false
}

// lookup asks the registry and records the answer. Failures are not cached:
// the next review asks again, and meanwhile a stale answer may stand in.
func (r *Resolver) lookup(ctx context.Context, key string, ref imageref.Ref, level imagefacts.Level, creds lookupCredentials) imagefacts.Facts {
	f := r.fetch(ctx, ref, level, creds)
	now := r.now()
	switch {
	case f.Err != nil:
		return r.staleOr(key, f)
	case f.NotFound, f.Malformed != nil:
		// Negative answers: a tag pushed, or pushed again in a shape
		// admitfn reads, must not wait out the positive TTL.
		r.cache.put(entry{key: key, facts: f, expires: now.Add(r.settings.NegativeCacheTTL), staleBy: now.Add(r.settings.NegativeCacheTTL)})
	case unsigned(f):
		// "Not signed" or "not attested" is a negative answer too: an image
		// signed a moment after it was first asked about must not wait out
		// the positive TTL.
		exp := now.Add(r.settings.NegativeCacheTTL)
		r.cache.put(entry{key: key, facts: f, expires: exp, staleBy: exp.Add(r.settings.StaleWindow)})
	default:
		exp := now.Add(r.settings.CacheTTL)
		r.cache.put(entry{key: key, facts: f, expires: exp, staleBy: exp.Add(r.settings.StaleWindow)})
	}
	return f
}

// staleOr returns the cached answer for key if it is within its stale
// window, marked stale; otherwise failed.
func (r *Resolver) staleOr(key string, failed imagefacts.Facts) imagefacts.Facts {
	if e, ok := r.cache.get(key); ok && r.now().Before(e.staleBy) && !e.facts.NotFound {
		f := e.facts
		f.Stale = true
		r.onCache("stale")
		return f
	}
	return failed
}

// unsigned reports whether f, fetched at a signature level, holds no
// signature (or, at LevelAttestations, no attestation) of any kind: a
// signature bundle among the referrers counts as both, so an image signed
// keylessly only is not taken for unsigned.
func unsigned(f imagefacts.Facts) bool {
	switch {
	case f.Level < imagefacts.LevelSignatures:
		return false
	case len(f.Signatures) == 0 && len(f.Bundles) == 0 && len(f.NotationSignatures) == 0:
		return true
	}
	return f.Level >= imagefacts.LevelAttestations && len(f.Attestations) == 0 && len(f.Bundles) == 0
}

// cacheKey names an answer: the level, the image, and the identities of
// the request's credentials (empty without any), so an answer learnt with
// one tenant's credentials is never another's.
func cacheKey(ref imageref.Ref, level imagefacts.Level, credsKey string) string {
	return fmt.Sprintf("%d|%s|%s", level, ref.String(), credsKey)
}
