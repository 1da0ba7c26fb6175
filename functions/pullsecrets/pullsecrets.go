// Package pullsecrets reads, through the apiserver, the pull Secrets the
// kubelet would pull a pod's images with: the pod's imagePullSecrets, else
// those of its ServiceAccount (what the ServiceAccount admission plugin
// copies into a pod that names none), from the pod's own namespace only.
// It fetches just the ServiceAccount and Secrets a review names, and keeps
// what it read for a short while: no informer lists every Secret of the
// cluster into a process that scales to zero.
package pullsecrets

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/admitfn/admitfn/functions/internal/expiring"
	"github.com/admitfn/admitfn/functions/pullcreds"
)

// ErrNotFound is what a Getter returns for an object that does not exist.
var ErrNotFound = errors.New("not found")

// ErrForbidden is what a Getter wraps when admitfn may not read an object:
// an answer that holds until its role changes, kept like one.
var ErrForbidden = errors.New("forbidden")

// Getter reads the objects a pod's credentials come from: *Client reads
// them from the apiserver.
type Getter interface {
	// Secret returns a Secret's type and data.
	Secret(ctx context.Context, namespace, name string) (typ string, data map[string][]byte, err error)
	// ServiceAccountPullSecrets returns the names of a ServiceAccount's
	// imagePullSecrets.
	ServiceAccountPullSecrets(ctx context.Context, namespace, name string) ([]string, error)
}

// Pod is who pulls: a pod's namespace, imagePullSecrets and ServiceAccount.
type Pod struct {
	Namespace string
	// Secrets are the pod's imagePullSecrets, in order.
	Secrets []string
	// ServiceAccount is the pod's serviceAccountName; "" is "default".
	ServiceAccount string
}

// Credentials are a pod's pull credentials: one keyring of all its pull
// Secrets, as the kubelet builds one, and what was read to get them.
// resolver.WithCredentials takes them.
type Credentials struct {
	keyring pullcreds.Keyring
	// Used are the Secrets the credentials come from, "namespace/name".
	Used []string
	// Notes say what was named but not used: missing Secrets, Secrets of
	// another type, a ServiceAccount that does not exist, an apiserver
	// error. Never a secret's content.
	Notes []string
}

// Lookup returns the credentials the kubelet would try for repo, in its
// order.
func (c *Credentials) Lookup(repo string) []pullcreds.Auth { return c.keyring.Lookup(repo) }

// Describe says, for a reason, which pull Secrets were tried and what was
// passed over.
func (c *Credentials) Describe() string {
	var parts []string
	if len(c.Used) == 0 {
		parts = append(parts, "no pull secret of the pod's (nor of its serviceaccount's) holds registry credentials")
	} else {
		parts = append(parts, "with the pull secrets "+strings.Join(c.Used, ", "))
	}
	return strings.Join(append(parts, c.Notes...), "; ")
}

// MalformedError is a pull Secret the kubelet cannot read: it then pulls
// none of the pod's images, so admitfn judges none of them either.
type MalformedError struct {
	// Secret is "namespace/name".
	Secret string
	Err    error
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("the pod's pull secret %s cannot be read (the kubelet would pull none of the pod's images with it): %v", e.Secret, e.Err)
}

func (e *MalformedError) Unwrap() error { return e.Err }

// Fix says what to do about it, for the decision's reason.
func (e *MalformedError) Fix() string {
	return "correct or remove the pull secret " + e.Secret + ": a kubernetes.io/dockerconfigjson Secret holds a docker config.json under .dockerconfigjson"
}

// DefaultTTL is how long a Secret or ServiceAccount read is kept: short,
// so that a rotated or added Secret is in force within it.
const DefaultTTL = 30 * time.Second

// maxEntries bounds what the Reader keeps.
const maxEntries = 2048

// Reader reads pods' pull credentials through a Getter and keeps each
// object it read for a TTL, missing ones too.
type Reader struct {
	get Getter
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[string]entry
	// pods are the Credentials built for a pod's names, kept until the
	// first of the objects they were built from is to be read again.
	pods map[string]built
}

type built struct {
	creds *Credentials
	err   error
	until time.Time
}

type entry struct {
	until time.Time
	// A Secret: its parsed config, ok false for another type.
	config pullcreds.Config
	ok     bool
	// A ServiceAccount: its pull Secrets' names.
	names []string
	// err is ErrNotFound or a *MalformedError: both are answers, kept.
	err error
}

// Option configures a Reader.
type Option func(*Reader)

// WithTTL sets how long what was read is kept (default DefaultTTL).
func WithTTL(d time.Duration) Option { return func(r *Reader) { r.ttl = d } }

// WithClock sets the clock TTLs are read on.
func WithClock(now func() time.Time) Option { return func(r *Reader) { r.now = now } }

// New returns a Reader that reads through get.
func New(get Getter, opts ...Option) *Reader {
	r := &Reader{get: get, ttl: DefaultTTL, now: time.Now, entries: map[string]entry{}, pods: map[string]built{}}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Credentials returns the credentials the kubelet would pull pod's images
// with. A Secret that is named but missing, or of a type that holds no
// registry credentials, is passed over and noted, as the kubelet passes it
// over; so is one the apiserver would not give (the lookup then goes
// without it, which can only deny more). A Secret of a registry type that
// does not parse is a *MalformedError.
func (r *Reader) Credentials(ctx context.Context, pod Pod) (*Credentials, error) {
	// Names are DNS labels and subdomains: no commas, no slashes.
	key := pod.Namespace + "/" + pod.ServiceAccount + "/" + strings.Join(pod.Secrets, ",")
	now := r.now()
	r.mu.Lock()
	b, ok := r.pods[key]
	r.mu.Unlock()
	if ok && now.Before(b.until) {
		return b.creds, b.err
	}
	b = built{until: now.Add(r.ttl)}
	keep := true
	b.creds, b.err = r.build(ctx, pod, func(e entry, err error) {
		if !isAnswer(err) {
			keep = false
		} else if e.until.Before(b.until) {
			b.until = e.until
		}
	})
	if keep {
		r.mu.Lock()
		expiring.MakeRoom(r.pods, maxEntries, now, func(b built) time.Time { return b.until })
		r.pods[key] = b
		r.mu.Unlock()
	}
	return b.creds, b.err
}

// build reads pod's Credentials, telling read of every object read.
func (r *Reader) build(ctx context.Context, pod Pod, read func(entry, error)) (*Credentials, error) {
	c := &Credentials{}
	names := pod.Secrets
	if len(names) == 0 {
		sa := pod.ServiceAccount
		if sa == "" {
			sa = "default"
		}
		e, err := r.read(ctx, "serviceaccount", pod.Namespace, sa, func(ctx context.Context) (entry, error) {
			names, err := r.get.ServiceAccountPullSecrets(ctx, pod.Namespace, sa)
			return entry{names: names}, err
		})
		read(e, err)
		switch {
		case errors.Is(err, ErrNotFound):
			c.Notes = append(c.Notes, fmt.Sprintf("serviceaccount %s/%s was not found", pod.Namespace, sa))
		case err != nil:
			c.Notes = append(c.Notes, fmt.Sprintf("cannot read serviceaccount %s/%s: %v", pod.Namespace, sa, err))
		}
		names = e.names
	}
	for _, name := range names {
		id := pod.Namespace + "/" + name
		e, err := r.read(ctx, "secret", pod.Namespace, name, func(ctx context.Context) (entry, error) {
			typ, data, err := r.get.Secret(ctx, pod.Namespace, name)
			if err != nil {
				return entry{}, err
			}
			cfg, ok, err := pullcreds.SecretConfig(typ, data)
			if err == nil && ok {
				// An entry whose auth does not decode spoils the whole
				// Secret for the kubelet: found here, once.
				err = (&pullcreds.Keyring{}).Add(id, cfg)
			}
			if err != nil {
				return entry{}, &MalformedError{Secret: id, Err: err}
			}
			return entry{config: cfg, ok: ok}, nil
		})
		read(e, err)
		var bad *MalformedError
		switch {
		case errors.As(err, &bad):
			return nil, err
		case errors.Is(err, ErrNotFound):
			c.Notes = append(c.Notes, "secret "+id+" was not found")
		case err != nil:
			c.Notes = append(c.Notes, fmt.Sprintf("cannot read secret %s: %v", id, err))
		case !e.ok:
			c.Notes = append(c.Notes, "secret "+id+" is not of type kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg")
		default:
			_ = c.keyring.Add("secret "+id, e.config) // checked when read
			c.Used = append(c.Used, id)
		}
	}
	return c, nil
}

// read returns the kept entry for kind/namespace/name, or fetches it. An
// answer (found, not found, forbidden, malformed) is kept; any other error
// is not.
func (r *Reader) read(ctx context.Context, kind, namespace, name string, fetch func(context.Context) (entry, error)) (entry, error) {
	key := kind + "/" + namespace + "/" + name
	now := r.now()
	r.mu.Lock()
	e, ok := r.entries[key]
	r.mu.Unlock()
	if ok && now.Before(e.until) {
		return e, e.err
	}
	e, err := fetch(ctx)
	if !isAnswer(err) {
		return entry{}, err
	}
	e.err, e.until = err, now.Add(r.ttl)
	r.mu.Lock()
	defer r.mu.Unlock()
	expiring.MakeRoom(r.entries, maxEntries, now, func(e entry) time.Time { return e.until })
	r.entries[key] = e
	return e, err
}

// isAnswer reports whether err (nil included) is the apiserver's answer
// about an object, kept for the TTL: found, not found, forbidden,
// malformed. Any other error is not kept.
func isAnswer(err error) bool {
	var bad *MalformedError
	return err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrForbidden) || errors.As(err, &bad)
}
