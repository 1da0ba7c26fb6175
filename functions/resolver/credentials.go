package resolver

import (
	"context"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/admitfn/admitfn/functions/imagefacts"
	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/pullcreds"
	"github.com/admitfn/admitfn/functions/readcap"
)

// Credentials are a request's registry credentials: those the kubelet
// would try for one pod (its pull Secrets), in its order, looked up by
// the repository as the kubelet names it. pullcreds.Keyrings is one.
type Credentials interface {
	Lookup(repo string) []pullcreds.Auth
}

// NodeCredentials are the node's own credentials for an image, beside
// its docker config: *credprovider.Providers runs the kubelet's credential
// provider plugins for them.
type NodeCredentials interface {
	Lookup(ctx context.Context, repo string) []pullcreds.Auth
}

// WithNodeCredentials has every lookup try nc's credentials after the
// request's and before the keychain's, as the kubelet tries its plugins'
// after a pod's pull Secrets. They are the same for every request, so
// answers learnt with them are cached as the node's.
func WithNodeCredentials(nc NodeCredentials) Option { return func(r *Resolver) { r.node = nc } }

type credentialsKey struct{}

// WithCredentials returns ctx carrying creds: lookups made with it try
// them first, in order, and then the resolver's own (the node's), as the
// kubelet tries a pod's pull Secrets before the node's credentials. Their
// answers are cached apart from every other set of credentials'.
func WithCredentials(ctx context.Context, creds Credentials) context.Context {
	return context.WithValue(ctx, credentialsKey{}, creds)
}

// lookupCredentials are the request's credentials for one image, and the
// key their answers are cached under.
type lookupCredentials struct {
	auths []pullcreds.Auth
	// key is the identities of auths, in order ("" for none).
	key string
}

func requestCredentials(ctx context.Context, ref imageref.Ref) lookupCredentials {
	creds, _ := ctx.Value(credentialsKey{}).(Credentials)
	if creds == nil {
		return lookupCredentials{}
	}
	auths := creds.Lookup(pullcreds.KubeletName(ref.Repo()))
	ids := make([]string, len(auths))
	for i, a := range auths {
		ids[i] = a.Identity()
	}
	return lookupCredentials{auths: auths, key: strings.Join(ids, ",")}
}

// pullers are the ways a lookup asks the registry, in the kubelet's
// order: with each of the request's credentials, then the node's
// plugins', then with the keychain's when it holds one for ref (or when
// there are none: then anonymously, as the kubelet pulls without
// credentials).
func (r *Resolver) pullers(ctx context.Context, ref imageref.Ref, creds lookupCredentials, nopts []name.Option) []*remote.Puller {
	auths := creds.auths
	if r.node != nil {
		auths = append(slices.Clip(auths), r.node.Lookup(ctx, pullcreds.KubeletName(ref.Repo()))...)
	}
	if len(auths) == 0 {
		return []*remote.Puller{r.puller}
	}
	var out []*remote.Puller
	for _, a := range auths {
		p, err := remote.NewPuller(append([]remote.Option{remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: a.Username, Password: a.Password}))}, r.pullerOptions...)...)
		if err == nil {
			out = append(out, p)
		}
	}
	if repo, err := name.NewRepository(ref.Repo(), nopts...); err == nil {
		if own, err := r.keychain.Resolve(repo); err == nil && own != authn.Anonymous {
			out = append(out, r.puller)
		}
	}
	return out
}

// fetch asks the registry about ref with each of the pullers in turn,
// until one is not refused: the kubelet tries the next credential when a
// registry refuses one. The lookup holds one of the process's maxLookups
// slots and reads within one budget of MaxLookupBytes, however many
// credentials it tries.
func (r *Resolver) fetch(ctx context.Context, ref imageref.Ref, level imagefacts.Level, creds lookupCredentials) imagefacts.Facts {
	select {
	case r.flights <- struct{}{}:
		defer func() { <-r.flights }()
	case <-ctx.Done():
		return imagefacts.Facts{Level: level, Err: &LookupError{Image: ref.String(), Registry: ref.Registry, Kind: "did not answer within the registry timeout (admitfn was busy with other lookups)", detail: ctx.Err()}}
	}
	ctx = readcap.With(ctx, readcap.New(MaxLookupBytes))
	var nopts []name.Option
	if r.settings.IsInsecure(ref.Registry) {
		nopts = append(nopts, name.Insecure)
	}
	pullers := r.pullers(ctx, ref, creds, nopts)
	var f imagefacts.Facts
	for _, p := range pullers {
		if f = r.fetchWith(ctx, p, ref, level, nopts); !f.Unauthorized {
			break
		}
	}
	return f
}
