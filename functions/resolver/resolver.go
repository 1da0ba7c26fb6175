// Package resolver asks container registries about images, through
// go-containerregistry: HEAD for tag → digest (it does not count against pull
// limits), the manifest and config only when a rule needs them. Answers are
// cached, concurrent lookups of one reference share one registry call, and a
// failing registry is covered by stale answers within the policy's window.
package resolver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/singleflight"

	"github.com/admitfn/admitfn/functions/egress"
	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/internal/httpx"
	"github.com/admitfn/admitfn/functions/policy"
)

// Resolver fetches image facts from registries. It is safe for concurrent
// use.
type Resolver struct {
	settings  policy.Registry
	keychain  authn.Keychain
	transport http.RoundTripper
	now       func() time.Time
	userAgent string
	onCache   func(result string)
	onFailure func(ref string, detail error)

	puller *remote.Puller
	cache  *cache
	group  singleflight.Group
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
func New(settings policy.Registry, opts ...Option) (*Resolver, error) {
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
	r.cache = newCache(size)
	p, err := remote.NewPuller(
		remote.WithAuthFromKeychain(r.keychain),
		remote.WithTransport(schemeGuard{next: r.transport, insecure: settings.IsInsecure}),
		remote.WithUserAgent(r.userAgent),
		// The review deadline bounds the whole lookup; one quick retry of
		// a temporary failure is all it has room for.
		remote.WithRetryBackoff(remote.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Steps: 2}),
	)
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
func NewTransport(settings policy.Registry) *http.Transport {
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
func (r *Resolver) Resolve(ctx context.Context, ref imageref.Ref, level policy.Level) policy.Facts {
	if level == policy.LevelName {
		return policy.Facts{Level: policy.LevelName}
	}
	key := cacheKey(ref, level)
	if f, ok := r.fresh(ref, level); ok {
		r.onCache("hit")
		return f
	}
	r.onCache("miss")
	ch := r.group.DoChan(key, func() (facts any, _ error) {
		// singleflight re-raises a panic of DoChan's function in a
		// goroutine of its own, where nothing can recover it: a defect in
		// one lookup would end the process. It is a failed lookup instead.
		defer httpx.Recovered(ctx, func(err error) { facts = policy.Facts{Level: level, Err: err} })
		// A flight for key may have ended, its answer cached, between the
		// miss above and this one starting.
		if f, ok := r.fresh(ref, level); ok {
			return f, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.settings.Timeout)
		defer cancel()
		return r.lookup(fctx, key, ref, level), nil
	})
	select {
	case res := <-ch:
		return res.Val.(policy.Facts)
	case <-ctx.Done():
		err := fmt.Errorf("registry %s did not answer before the review deadline: %w", ref.Registry, ctx.Err())
		return r.staleOr(key, policy.Facts{Level: level, Err: err})
	}
}

// fresh returns a cached answer within its TTL, at the level asked or more.
func (r *Resolver) fresh(ref imageref.Ref, level policy.Level) (policy.Facts, bool) {
	now := r.now()
	for l := level; l <= policy.LevelSignatures; l++ {
		if e, ok := r.cache.get(cacheKey(ref, l)); ok && now.Before(e.expires) {
			return e.facts, true
		}
	}
	return policy.Facts{}, false
}

// lookup asks the registry and records the answer. Failures are not cached:
// the next review asks again, and meanwhile a stale answer may stand in.
func (r *Resolver) lookup(ctx context.Context, key string, ref imageref.Ref, level policy.Level) policy.Facts {
	f := r.fetch(ctx, ref, level)
	now := r.now()
	switch {
	case f.Err != nil:
		return r.staleOr(key, f)
	case f.NotFound:
		r.cache.put(entry{key: key, facts: f, expires: now.Add(r.settings.NegativeCacheTTL), staleBy: now.Add(r.settings.NegativeCacheTTL)})
	case level >= policy.LevelSignatures && (len(f.Signatures) == 0 || len(f.Attestations) == 0):
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
func (r *Resolver) staleOr(key string, failed policy.Facts) policy.Facts {
	if e, ok := r.cache.get(key); ok && r.now().Before(e.staleBy) && !e.facts.NotFound {
		f := e.facts
		f.Stale = true
		r.onCache("stale")
		return f
	}
	return failed
}

func cacheKey(ref imageref.Ref, level policy.Level) string {
	return fmt.Sprintf("%d|%s", level, ref.String())
}

func (r *Resolver) fetch(ctx context.Context, ref imageref.Ref, level policy.Level) policy.Facts {
	var nopts []name.Option
	if r.settings.IsInsecure(ref.Registry) {
		nopts = append(nopts, name.Insecure)
	}
	nref, err := ref.Reference(nopts...)
	if err != nil {
		return policy.Facts{Level: level, Err: err}
	}
	if level == policy.LevelDigest {
		desc, err := r.puller.Head(ctx, nref)
		if err != nil {
			return r.failure(level, ref, err)
		}
		return policy.Facts{Level: level, Digest: desc.Digest.String()}
	}

	desc, err := r.puller.Get(ctx, nref)
	if err != nil {
		return r.failure(level, ref, err)
	}
	f := policy.Facts{Level: level, Digest: desc.Digest.String()}
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return r.failure(level, ref, err)
		}
		manifest, err := idx.IndexManifest()
		if err != nil {
			return r.failure(level, ref, fmt.Errorf("reading index manifest: %w", err))
		}
		for _, m := range manifest.Manifests {
			if m.Platform == nil || m.Platform.OS == "unknown" {
				// Attestations and other artifacts, not runnable images.
				continue
			}
			p := policy.Platform{OS: m.Platform.OS, Arch: m.Platform.Architecture, Variant: m.Platform.Variant}
			f.Platforms = append(f.Platforms, p)
			if !r.inspects(p) {
				continue
			}
			img, err := idx.Image(m.Digest)
			if err != nil {
				return r.failure(level, ref, fmt.Errorf("fetching %s image %s: %w", p, m.Digest, err))
			}
			cfg, err := imageConfig(img)
			if err != nil {
				return r.failure(level, ref, fmt.Errorf("reading %s config: %w", p, err))
			}
			f.Configs = append(f.Configs, cfg)
		}
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return r.failure(level, ref, err)
		}
		cfg, err := imageConfig(img)
		if err != nil {
			return r.failure(level, ref, fmt.Errorf("reading the manifest and config: %w", err))
		}
		f.Platforms = []policy.Platform{cfg.Platform}
		f.Configs = []policy.ImageConfig{cfg}
	default:
		return policy.Facts{Level: level, Err: fmt.Errorf("%s is a %s, not an image or an image index", ref.String(), desc.MediaType)}
	}
	if level >= policy.LevelSignatures {
		sigs, failed := r.stored(ctx, ref, f.Digest, ".sig", nopts)
		if failed != nil {
			return *failed
		}
		for _, l := range sigs {
			b64, ok := l.annotations["dev.cosignproject.cosign/signature"]
			if !ok {
				continue
			}
			if sig, err := base64.StdEncoding.DecodeString(b64); err == nil {
				f.Signatures = append(f.Signatures, policy.Signature{Payload: l.blob, Signature: sig})
			}
		}
		atts, failed := r.stored(ctx, ref, f.Digest, ".att", nopts)
		if failed != nil {
			return *failed
		}
		for _, l := range atts {
			f.Attestations = append(f.Attestations, l.blob)
		}
		envs, bundles, failed := r.bundles(ctx, ref, f.Digest, nopts)
		if failed != nil {
			return *failed
		}
		f.Attestations = append(f.Attestations, envs...)
		f.Bundles = bundles
	}
	return f
}

// bundleMediaType prefixes the media type of a sigstore bundle layer.
const bundleMediaType = "application/vnd.dev.sigstore.bundle"

// bundles reads the sigstore bundles attached to digest through the OCI
// referrers API, or its tag fallback (sha256-<hex>), as newer cosign
// writes signatures and attestations, and returns their DSSE envelopes
// and the bundles whole (keyless verification needs their certificates).
// Referrers are recognised by their layer's media type: the index's
// artifactType differs between cosign versions.
func (r *Resolver) bundles(ctx context.Context, ref imageref.Ref, digest string, nopts []name.Option) (envs, bundles [][]byte, failed *policy.Facts) {
	fail := func(err error) ([][]byte, [][]byte, *policy.Facts) {
		f := r.failure(policy.LevelSignatures, ref, fmt.Errorf("reading its referrers: %w", err))
		if f.NotFound {
			return nil, nil, nil
		}
		return nil, nil, &f
	}
	d, err := name.NewDigest(ref.Repo()+"@"+digest, nopts...)
	if err != nil {
		return fail(err)
	}
	idx, err := remote.Referrers(d, remote.WithContext(ctx), remote.Reuse(r.puller))
	if err != nil {
		return fail(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return fail(err)
	}
	if len(im.Manifests) > maxSignatures {
		return fail(fmt.Errorf("%d referrers, more than the %d admitfn reads", len(im.Manifests), maxSignatures))
	}
	isBundle := func(l v1.Descriptor) bool { return strings.HasPrefix(string(l.MediaType), bundleMediaType) }
	for _, desc := range im.Manifests {
		// Fetched by digest from the repository: the index the referrers
		// call returns cannot resolve its children itself.
		child, err := name.NewDigest(ref.Repo()+"@"+desc.Digest.String(), nopts...)
		if err != nil {
			return fail(err)
		}
		layers, err := r.artifactLayers(ctx, child, isBundle, 0)
		if err != nil {
			return fail(err)
		}
		for _, l := range layers {
			var bundle struct {
				DSSEEnvelope json.RawMessage `json:"dsseEnvelope"`
			}
			if json.Unmarshal(l.blob, &bundle) == nil && len(bundle.DSSEEnvelope) > 0 {
				envs = append(envs, bundle.DSSEEnvelope)
				bundles = append(bundles, l.blob)
			}
		}
	}
	return envs, bundles, nil
}

// Limits on what one image's signature or attestation tag may hold: more
// is not a signature store but a way to make admitfn read.
const (
	maxSignatures       = 64
	maxSignaturePayload = 64 << 10
)

// storedLayer is one layer of an artifact cosign stored beside an image.
type storedLayer struct {
	annotations map[string]string
	blob        []byte
}

// stored reads the layers of the artifact cosign stored for digest in
// ref's repository under the tag sha256-<hex><suffix>: ".sig" (one
// simple-signing payload per layer, its signature in an annotation) or
// ".att" (one DSSE envelope per layer). No tag means none; a registry that
// cannot say is a failure, as for any lookup.
func (r *Resolver) stored(ctx context.Context, ref imageref.Ref, digest, suffix string, nopts []name.Option) ([]storedLayer, *policy.Facts) {
	fail := func(err error) ([]storedLayer, *policy.Facts) {
		f := r.failure(policy.LevelSignatures, ref, fmt.Errorf("reading its %s artifacts: %w", suffix, err))
		if f.NotFound {
			return nil, nil
		}
		return nil, &f
	}
	tag, err := name.NewTag(ref.Repo()+":"+strings.Replace(digest, ":", "-", 1)+suffix, nopts...)
	if err != nil {
		return fail(err)
	}
	layers, err := r.artifactLayers(ctx, tag, func(v1.Descriptor) bool { return true }, maxSignatures)
	if err != nil {
		return fail(err)
	}
	return layers, nil
}

// artifactLayers reads the layers keep selects of the image manifest at
// ref, each as stored (a payload's own bytes) and at most
// maxSignaturePayload long; larger ones are left out. maxLayers, when not
// 0, refuses a manifest with more layers than that.
func (r *Resolver) artifactLayers(ctx context.Context, ref name.Reference, keep func(v1.Descriptor) bool, maxLayers int) ([]storedLayer, error) {
	desc, err := r.puller.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	img, err := desc.Image()
	if err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	if maxLayers > 0 && len(m.Layers) > maxLayers {
		return nil, fmt.Errorf("%d layers, more than the %d admitfn reads", len(m.Layers), maxLayers)
	}
	var out []storedLayer
	for _, l := range m.Layers {
		if !keep(l) || l.Size > maxSignaturePayload {
			continue
		}
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			return nil, err
		}
		rc, err := layer.Compressed()
		if err != nil {
			return nil, err
		}
		blob, err := io.ReadAll(io.LimitReader(rc, maxSignaturePayload+1))
		rc.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, storedLayer{annotations: l.Annotations, blob: blob})
	}
	return out, nil
}

func (r *Resolver) inspects(p policy.Platform) bool {
	for _, want := range r.settings.Platforms {
		if want.Covers(p) {
			return true
		}
	}
	return false
}

func imageConfig(img v1.Image) (policy.ImageConfig, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return policy.ImageConfig{}, err
	}
	return policy.ImageConfig{
		Platform: policy.Platform{OS: cf.OS, Arch: cf.Architecture, Variant: cf.Variant},
		User:     cf.Config.User,
		Created:  cf.Created.Time,
		Labels:   cf.Config.Labels,
	}, nil
}

// failure tells "the registry says it does not exist" (a fact) from "the
// registry could not be asked" (an error the rule's onRegistryError
// decides). The error says what kind of failure it was, and never the
// underlying network error: a reason goes back to whoever asked, and raw
// errors would tell them about hosts and ports admitfn can see. The detail
// goes to the failure log.
func (r *Resolver) failure(level policy.Level, ref imageref.Ref, err error) policy.Facts {
	var terr *transport.Error
	if errors.As(err, &terr) {
		if terr.StatusCode == http.StatusNotFound {
			return policy.Facts{Level: level, NotFound: true}
		}
		var msgs []string
		for _, d := range terr.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return policy.Facts{Level: level, NotFound: true}
			}
			msgs = append(msgs, fmt.Sprintf("%s: %s", d.Code, d.Message))
		}
		// The status and the registry's own words; the rest of err is
		// go-containerregistry retelling its ping attempts.
		what := fmt.Sprintf("%d %s", terr.StatusCode, http.StatusText(terr.StatusCode))
		if len(msgs) > 0 {
			what += " (" + strings.Join(msgs, "; ") + ")"
		}
		unauthorized := terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden
		return policy.Facts{Level: level, Unauthorized: unauthorized, Err: fmt.Errorf("looking up %s: the registry answered %s", ref.String(), what)}
	}
	r.onFailure(ref.String(), err)
	return policy.Facts{Level: level, Err: &LookupError{Image: ref.String(), Registry: ref.Registry, Kind: classify(err), detail: err}}
}

// LookupError is a lookup that got no answer from the registry.
type LookupError struct {
	Image, Registry string
	// Kind says what went wrong, in words fit for a denial's reason.
	Kind   string
	detail error
}

// Error is the kind alone: the rule's reason already names the image and
// the registry.
func (e *LookupError) Error() string { return e.Kind }

// Unwrap returns the underlying error, for errors.Is and errors.As.
func (e *LookupError) Unwrap() error { return e.detail }

// classify names the kind of a failure to reach a registry.
func classify(err error) string {
	var (
		refused  *egress.RefusedError
		dnsErr   *net.DNSError
		netErr   net.Error
		certErr  *tls.CertificateVerificationError
		recErr   tls.RecordHeaderError
		authErr  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		invalErr x509.CertificateInvalidError
		syntax   *json.SyntaxError
	)
	switch {
	case errors.As(err, &refused):
		return fmt.Sprintf("resolves to %s address, which admitfn does not connect to; list the registry under spec.registry.internal if it is yours", refused.Kind)
	case errors.As(err, &dnsErr):
		return "has a name that could not be resolved"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused the connection"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "closed the connection"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "did not answer within the registry timeout"
	case errors.As(err, &certErr), errors.As(err, &authErr), errors.As(err, &hostErr), errors.As(err, &invalErr):
		return "presented a certificate that is not trusted for its name"
	case errors.As(err, &recErr):
		return "did not speak TLS"
	case errors.As(err, &syntax):
		return "answered with a manifest or config that is not valid JSON"
	case strings.Contains(err.Error(), "refusing plain HTTP"):
		return "is reached over plain HTTP, which the policy does not allow: list it under spec.registry.insecure"
	}
	return "could not be reached"
}

// schemeGuard refuses plain HTTP to registries the policy does not list as
// insecure. go-containerregistry falls back to HTTP on its own for loopback
// and private addresses; a policy must opt in to that.
type schemeGuard struct {
	next     http.RoundTripper
	insecure func(host string) bool
}

func (g schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.insecure(req.URL.Host) {
		return nil, fmt.Errorf("refusing plain HTTP to %s: list it under spec.registry.insecure to allow it", req.URL.Host)
	}
	return g.next.RoundTrip(req)
}
