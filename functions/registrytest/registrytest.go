// Package registrytest runs go-containerregistry's in-process registry on
// loopback for tests, counts the requests it sees and can be made to fail.
package registrytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Fault is how the registry misbehaves.
type Fault int

const (
	// Healthy serves requests.
	Healthy Fault = iota
	// ServerError answers every request with 500.
	ServerError
	// Hang holds every request until the client gives up.
	Hang
	// TooManyRequests answers 429 with Retry-After: 30, as rate-limited
	// registries do.
	TooManyRequests
	// GarbageManifest serves manifests that are not JSON (HEAD still
	// answers with the real digest).
	GarbageManifest
	// Slow serves every request after the delay given to SetDelay.
	Slow
	// Unauthorized answers manifest requests 401, as a private repository
	// does to a client without credentials.
	Unauthorized
	// Forbidden answers manifest requests 403, as a repository the
	// client's credentials may not read.
	Forbidden
)

// Registry is a loopback registry.
type Registry struct {
	t      testing.TB
	srv    *httptest.Server
	fault  atomic.Int32
	delay  atomic.Int64
	mu     sync.Mutex
	counts map[string]int // "METHOD manifests" and "METHOD blobs"
	// closed counts client connections the server saw close.
	closed atomic.Int32
	// intercept, when set, answers requests before the registry does.
	intercept atomic.Pointer[func(http.ResponseWriter, *http.Request) bool]
	// auth, when set, is the credential every /v2/ request needs (token:
	// through a bearer token from /token).
	auth  *Credentials
	token bool
	// tokens are the bearer tokens issued and still valid.
	tokens sync.Map
	issued atomic.Int64
}

// ExpireTokens makes every token issued so far invalid, as an expired
// one is: clients must fetch a new one.
func (r *Registry) ExpireTokens() { r.tokens.Clear() }

// authorized answers the authentication a registry made WithBasicAuth or
// WithTokenAuth asks for; it reports whether req may go on.
func (r *Registry) authorized(w http.ResponseWriter, req *http.Request) bool {
	if r.auth == nil {
		return true
	}
	if r.token && req.URL.Path == "/token" {
		if user, pass, ok := req.BasicAuth(); !ok || user != r.auth.Username || pass != r.auth.Password {
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
			return false
		}
		tok := fmt.Sprintf("token-%d", r.issued.Add(1))
		r.tokens.Store(tok, true)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"token":%q,"access_token":%q,"expires_in":300}`, tok, tok)
		return false
	}
	if !strings.HasPrefix(req.URL.Path, "/v2/") {
		return true
	}
	if r.token {
		if tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
			if _, valid := r.tokens.Load(tok); valid {
				return true
			}
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="registrytest"`, r.Host()))
	} else {
		if user, pass, ok := req.BasicAuth(); ok && user == r.auth.Username && pass == r.auth.Password {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="registrytest"`)
	}
	http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
	return false
}

// remoteOptions are what the test's own pushes need: its credentials.
func (r *Registry) remoteOptions() []remote.Option {
	if r.auth == nil {
		return nil
	}
	return []remote.Option{remote.WithAuth(&authn.Basic{Username: r.auth.Username, Password: r.auth.Password})}
}

// Intercept sets h to see every request first: when it returns true it has
// answered, and the registry does not. For answers no push can make (a
// body that never ends, a manifest that is not JSON).
func (r *Registry) Intercept(h func(w http.ResponseWriter, req *http.Request) bool) {
	r.intercept.Store(&h)
}

// Option configures the registry.
type Option func(*options)

type options struct {
	referrers bool
	auth      *Credentials
	token     bool
	address   string
}

// Credentials are the username and password a registry made WithBasicAuth
// or WithTokenAuth accepts.
type Credentials struct{ Username, Password string }

// DockerConfigJSON is a docker config.json holding c for host, what a
// kubernetes.io/dockerconfigjson pull Secret keeps under .dockerconfigjson.
func (c Credentials) DockerConfigJSON(host string) []byte {
	auth := base64.StdEncoding.EncodeToString([]byte(c.Username + ":" + c.Password))
	return fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, host, auth)
}

// WithReferrers makes the registry serve the OCI referrers API (without
// it, clients fall back to the sha256-<hex> tag).
func WithReferrers() Option { return func(o *options) { o.referrers = true } }

// WithBasicAuth makes every /v2/ request need HTTP basic authentication
// with c, as a private registry answering 401 with a Basic challenge.
func WithBasicAuth(c Credentials) Option { return func(o *options) { o.auth = &c } }

// WithTokenAuth makes every /v2/ request need a bearer token, which
// GET /token gives in exchange for basic authentication with c: the
// realm flow of Docker Hub, GHCR, Harbor and most others. Tokens live
// for the registry's life; ExpireTokens makes the issued ones invalid.
func WithTokenAuth(c Credentials) Option {
	return func(o *options) { o.auth, o.token = &c, true }
}

// WithAddress makes the registry listen on addr ("10.244.0.1:0") instead
// of a loopback port: where pods on a test's bridge reach it.
func WithAddress(addr string) Option { return func(o *options) { o.address = addr } }

// New starts a registry that stops when the test ends.
func New(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	r := &Registry{t: t, counts: map[string]int{}, auth: o.auth, token: o.token}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(o.referrers))
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.count(req)
		if h := r.intercept.Load(); h != nil && (*h)(w, req) {
			return
		}
		if !r.authorized(w, req) {
			return
		}
		switch Fault(r.fault.Load()) {
		case ServerError:
			http.Error(w, `{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}`, http.StatusInternalServerError)
			return
		case Hang:
			select {
			case <-req.Context().Done():
			case <-time.After(30 * time.Second):
			}
			return
		case TooManyRequests:
			w.Header().Set("Retry-After", "30")
			http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit reached"}]}`, http.StatusTooManyRequests)
			return
		case GarbageManifest:
			if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/manifests/") {
				w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
				w.Write([]byte("{this is not a manifest"))
				return
			}
		case Unauthorized:
			if strings.Contains(req.URL.Path, "/manifests/") {
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
		case Forbidden:
			if strings.Contains(req.URL.Path, "/manifests/") {
				http.Error(w, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`, http.StatusForbidden)
				return
			}
		case Slow:
			select {
			case <-req.Context().Done():
				return
			case <-time.After(time.Duration(r.delay.Load())):
			}
		}
		inner.ServeHTTP(w, req)
	}))
	if o.address != "" {
		l, err := net.Listen("tcp", o.address)
		if err != nil {
			t.Fatal(err)
		}
		r.srv.Listener.Close()
		r.srv.Listener = l
	}
	r.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			r.closed.Add(1)
		}
	}
	r.srv.Start()
	t.Cleanup(r.srv.Close)
	return r
}

// ClosedConnections is how many client connections have closed.
func (r *Registry) ClosedConnections() int { return int(r.closed.Load()) }

func (r *Registry) count(req *http.Request) {
	kind := "other"
	switch {
	case strings.Contains(req.URL.Path, "/manifests/"):
		kind = "manifests"
	case strings.Contains(req.URL.Path, "/blobs/"):
		kind = "blobs"
	}
	r.mu.Lock()
	r.counts[req.Method+" "+kind]++
	r.mu.Unlock()
}

// Host is the registry's host:port.
func (r *Registry) Host() string { return strings.TrimPrefix(r.srv.URL, "http://") }

// SetFault changes how the registry behaves from now on.
func (r *Registry) SetFault(f Fault) { r.fault.Store(int32(f)) }

// SetDelay sets how long the Slow fault waits before serving.
func (r *Registry) SetDelay(d time.Duration) { r.delay.Store(int64(d)) }

// Stop shuts the registry down: its port then refuses connections.
func (r *Registry) Stop() { r.srv.Close() }

// ManifestRequests counts manifest requests (GET and HEAD) seen so far.
func (r *Registry) ManifestRequests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts["GET manifests"] + r.counts["HEAD manifests"]
}

// Requests returns a copy of the request counts by "METHOD kind".
func (r *Registry) Requests() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.counts {
		out[k] = v
	}
	return out
}

// ResetCounts forgets the requests seen so far.
func (r *Registry) ResetCounts() {
	r.mu.Lock()
	r.counts = map[string]int{}
	r.mu.Unlock()
}

// Ref is "host:port/repo" plus suffix, e.g. Ref("app", ":v1").
func (r *Registry) Ref(repo, suffix string) string { return r.Host() + "/" + repo + suffix }

// reference parses "repo:tag" relative to the registry.
func (r *Registry) reference(repoTag string) name.Reference {
	r.t.Helper()
	ref, err := name.ParseReference(r.Host()+"/"+repoTag, name.Insecure)
	if err != nil {
		r.t.Fatal(err)
	}
	return ref
}

// Image makes a small random image with the given config tweaks.
func Image(t testing.TB, tweak func(*v1.ConfigFile)) v1.Image {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: time.Now().UTC().Truncate(time.Second)}
	cf.Config.User = "65532"
	if tweak != nil {
		tweak(cf)
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Push writes img to ref ("repo:tag" relative to the registry) and returns
// its digest.
func (r *Registry) Push(repoTag string, img v1.Image) string {
	r.t.Helper()
	ref := r.reference(repoTag)
	if err := remote.Write(ref, img, r.remoteOptions()...); err != nil {
		r.t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		r.t.Fatal(err)
	}
	return d.String()
}

// PushIndex writes a multi-platform index of fresh images, one per platform,
// to repoTag and returns its digest. tweak, if set, edits each config.
func (r *Registry) PushIndex(repoTag string, platforms []v1.Platform, tweak func(*v1.ConfigFile)) string {
	r.t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		img := Image(r.t, func(cf *v1.ConfigFile) {
			cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
			if tweak != nil {
				tweak(cf)
			}
		})
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	ref := r.reference(repoTag)
	if err := remote.WriteIndex(ref, idx, r.remoteOptions()...); err != nil {
		r.t.Fatal(err)
	}
	d, err := idx.Digest()
	if err != nil {
		r.t.Fatal(err)
	}
	return d.String()
}

// Child is one manifest of an index PushIndexOf writes: an image and the
// platform its descriptor names (nil: none, as some tools write).
type Child struct {
	Image    v1.Image
	Platform *v1.Platform
}

// PushIndexOf writes an index of the given children to repoTag and returns
// its digest.
func (r *Registry) PushIndexOf(repoTag string, children ...Child) string {
	r.t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, c := range children {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: c.Image, Descriptor: v1.Descriptor{Platform: c.Platform}})
	}
	if err := remote.WriteIndex(r.reference(repoTag), idx, r.remoteOptions()...); err != nil {
		r.t.Fatal(err)
	}
	d, err := idx.Digest()
	if err != nil {
		r.t.Fatal(err)
	}
	return d.String()
}

// Layer is one layer of an artifact PushArtifact writes.
type Layer struct {
	Data        []byte
	MediaType   types.MediaType
	Annotations map[string]string
}

// PushArtifact writes an OCI image manifest with the given layers (the
// first pushed is the oldest) to repoTag, as cosign stores signatures and
// attestations, and returns its digest.
func (r *Registry) PushArtifact(repoTag string, layers ...Layer) string {
	r.t.Helper()
	var adds []mutate.Addendum
	for _, l := range layers {
		adds = append(adds, mutate.Addendum{Layer: static.NewLayer(l.Data, l.MediaType), Annotations: l.Annotations})
	}
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), adds...)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.Push(repoTag, img)
}

// SignedPayload is the simple-signing payload cosign signs for digest in
// repo.
func (r *Registry) SignedPayload(repo, digest string) []byte {
	return []byte(fmt.Sprintf(`{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`,
		r.Host()+"/"+repo, digest))
}

// Delete removes the manifest behind repoTag.
func (r *Registry) Delete(repoTag string) {
	r.t.Helper()
	ref := r.reference(repoTag)
	if err := remote.Delete(ref, r.remoteOptions()...); err != nil {
		r.t.Fatal(err)
	}
}

// Sign stores a signature for digest in repo the way `cosign sign --key`
// does: the tag sha256-<hex>.sig, one layer holding the simple-signing
// payload, the signature (by sign, over the payload) base64 in the layer's
// dev.cosignproject.cosign/signature annotation. The real cosign CLI is
// used by the e2e suite; this is for unit tests and benchmarks.
func (r *Registry) Sign(repo, digest string, sign func(payload []byte) []byte) {
	r.t.Helper()
	payload := r.SignedPayload(repo, digest)
	layer := static.NewLayer(payload, "application/vnd.dev.cosign.simplesigning.v1+json")
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{
		Layer:       layer,
		Annotations: map[string]string{"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(sign(payload))},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.Push(repo+":"+strings.Replace(digest, ":", "-", 1)+".sig", img)
}

// AttachBundle attaches a sigstore bundle to digest in repo the way
// `cosign sign --new-bundle-format` does on a registry with the referrers
// API (New with WithReferrers): an OCI artifact whose subject is the
// image, its one layer the bundle.
func (r *Registry) AttachBundle(repo, digest string, bundle []byte) {
	r.t.Helper()
	subject, err := remote.Head(r.reference(repo+"@"+digest), r.remoteOptions()...)
	if err != nil {
		r.t.Fatal(err)
	}
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		mutate.Addendum{Layer: static.NewLayer(bundle, "application/vnd.dev.sigstore.bundle.v0.3+json")})
	if err != nil {
		r.t.Fatal(err)
	}
	artifact, ok := mutate.Subject(img, *subject).(v1.Image)
	if !ok {
		r.t.Fatal("mutate.Subject of an image is not an image")
	}
	d, err := artifact.Digest()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := remote.Write(r.reference(repo+"@"+d.String()), artifact, r.remoteOptions()...); err != nil {
		r.t.Fatal(err)
	}
}

// Key is an ECDSA P-256 key pair that signs as cosign does (ASN.1 over
// SHA-256): PEM is the public key for a policy, Sign goes to Registry.Sign.
type Key struct {
	PEM  string
	Sign func(payload []byte) []byte
}

// NewKey makes a Key.
func NewKey(t testing.TB) Key {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return Key{string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), func(payload []byte) []byte {
		h := sha256.Sum256(payload)
		sig, err := ecdsa.SignASN1(rand.Reader, k, h[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}}
}
