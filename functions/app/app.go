// Package app assembles admitfn from its parts: the policy, the resolver,
// the reviewer, the handlers, metrics, logs, events and the policy watcher.
// `admitfn serve` and the Knative Functions entry point at the repository
// root are both thin shells around it.
package app

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/admitfn/admitfn/functions/callerauth"
	"github.com/admitfn/admitfn/functions/credprovider"
	"github.com/admitfn/admitfn/functions/events"
	"github.com/admitfn/admitfn/functions/imagepolicy"
	"github.com/admitfn/admitfn/functions/metrics"
	"github.com/admitfn/admitfn/functions/mutating"
	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/pullsecrets"
	"github.com/admitfn/admitfn/functions/reload"
	"github.com/admitfn/admitfn/functions/resolver"
	"github.com/admitfn/admitfn/functions/review"
	"github.com/admitfn/admitfn/functions/validating"
	"github.com/admitfn/admitfn/functions/webhook"
)

// endpoints builds each handler by name; each is one webhook.Handler.
func endpoints() map[string]func(*review.Reviewer, observe.Observer) webhook.Endpoint {
	return map[string]func(*review.Reviewer, observe.Observer) webhook.Endpoint{
		"imagepolicy": imagepolicy.New,
		"validating":  validating.New,
		"mutating":    mutating.New,
	}
}

// HandlerNames lists the handler names, sorted.
func HandlerNames() []string {
	var names []string
	for n := range endpoints() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Config says what to assemble.
type Config struct {
	// PolicyFile is the policy to load and watch; empty means the embedded
	// default.
	PolicyFile string
	// Handlers are the handler names to mount (default: all).
	Handlers []string
	// Logger receives reload messages.
	Logger *zap.SugaredLogger
	// Getenv reads K_SINK, K_CE_OVERRIDES and K_SERVICE (default os.Getenv).
	Getenv func(string) string
	// UserAgent is sent to registries.
	UserAgent string
	// TokenDir, when set, is a folder of caller tokens (a mounted Secret,
	// one token per file): every route but the health probes then answers
	// only requests that carry one of them as a bearer token.
	TokenDir string
	// MetricsApart leaves /metrics out of Handler: the caller
	// serves Metrics.Handler() on a listener of its own.
	MetricsApart bool
	// PullSecrets, when set, reads pods' pull Secrets (a
	// *pullsecrets.Client): reviews of pods then ask registries with the
	// credentials the pod's kubelet would pull with.
	PullSecrets pullsecrets.Getter
	// CredentialProviderConfig, when set, is the kubelet's
	// CredentialProviderConfig (a file or a folder), whose plugins, in
	// CredentialProviderBinDir, give the node's registry credentials, as
	// they give the kubelet's.
	CredentialProviderConfig, CredentialProviderBinDir string
}

// App is an assembled admitfn.
type App struct {
	// Paths are the admission paths mounted, in the order asked.
	Paths []string
	// handler serves the admission paths and /metrics; with a TokenDir,
	// each requires a caller token.
	handler  *http.ServeMux
	Reviewer *review.Reviewer
	Metrics  *metrics.Metrics

	cfg    Config
	sender *events.Sender
	tokens *callerauth.Tokens
	// resolver is the one the reviewer asks, kept here so that Close and
	// a reload reach its connections.
	resolver atomic.Pointer[resolver.Resolver]
	// reloading serializes Reload: two at once could each build a
	// resolver and leave the reviewer asking one and Close reaching the
	// other.
	reloading sync.Mutex
	// node runs the kubelet's credential provider plugins; nil without.
	node *credprovider.Providers
	// loaded is what New read of the policy file and the files it names,
	// as the watcher fingerprints them: the watcher's baseline, so a change
	// between New and Watch is not lost.
	loaded string
}

// New loads the policy and assembles the handlers. It makes no network
// call.
func New(cfg Config) (*App, error) {
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop().Sugar()
	}
	if len(cfg.Handlers) == 0 {
		cfg.Handlers = HandlerNames()
	}
	p, loaded, err := load(cfg.PolicyFile)
	if err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, Metrics: metrics.New(), loaded: loaded}
	if cfg.CredentialProviderConfig != "" {
		logger := cfg.Logger
		a.node, err = credprovider.Load(cfg.CredentialProviderConfig, cfg.CredentialProviderBinDir,
			credprovider.WithFailureLog(func(provider, repo string, err error) {
				logger.Warnw("a credential provider plugin failed; the image is read without its credentials", "provider", provider, "repository", repo, zap.Error(err))
			}))
		if err != nil {
			return nil, fmt.Errorf("credential provider config: %w", err)
		}
	}
	// A step that fails after the event sender started must stop it:
	// its goroutines would outlive the App nobody can Close.
	ok := false
	defer func() {
		if !ok {
			a.Close(0)
		}
	}()
	res, err := a.newResolver(p)
	if err != nil {
		return nil, err
	}
	a.resolver.Store(res)
	var opts []review.Option
	if cfg.PullSecrets != nil {
		opts = append(opts, review.WithPullSecrets(pullsecrets.New(cfg.PullSecrets)))
	}
	a.Reviewer = review.New(p, res, opts...)
	obs := observe.Observers{observe.Log{}, a.Metrics}
	if sink := cfg.Getenv("K_SINK"); sink != "" {
		service := cfg.Getenv("K_SERVICE")
		if service == "" {
			service = "admitfn"
		}
		a.sender, err = events.New(events.Config{
			Sink:      sink,
			Overrides: cfg.Getenv("K_CE_OVERRIDES"),
			Source:    "/apis/admitfn.dev/services/" + service,
			OnOutcome: a.Metrics.Event,
		})
		if err != nil {
			return nil, err
		}
		obs = append(obs, a.sender)
	}
	routes := map[string]http.Handler{}
	if !cfg.MetricsApart {
		routes[metrics.Path] = a.Metrics.Handler()
	}
	build := endpoints()
	for _, name := range cfg.Handlers {
		name = strings.TrimSpace(name)
		newEndpoint, ok := build[name]
		if !ok {
			return nil, fmt.Errorf("unknown handler %q (known: %s)", name, strings.Join(HandlerNames(), ","))
		}
		ep := newEndpoint(a.Reviewer, obs)
		routes[ep.Path()] = ep
		a.Paths = append(a.Paths, ep.Path())
	}
	if cfg.TokenDir != "" {
		if a.tokens, err = callerauth.Load(cfg.TokenDir); err != nil {
			return nil, err
		}
		refused := func(why callerauth.Refusal) { a.Metrics.Unauthenticated(string(why)) }
		for path, h := range routes {
			routes[path] = a.tokens.Require(h, refused)
		}
	}
	a.handler = http.NewServeMux()
	for path, h := range routes {
		a.handler.Handle(path, h)
	}
	ok = true
	return a, nil
}

// load reads the policy file (the embedded default when path is empty)
// and the files it names, and returns the policy and what was read, as
// the watcher fingerprints it.
func load(path string) (*policy.Policy, string, error) {
	if path == "" {
		return policy.Default(), "", nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	read := map[string]string{path: string(data)}
	p, err := policy.Parse(data, policy.WithReadFile(func(f string) ([]byte, error) {
		b, err := os.ReadFile(f)
		if err == nil {
			read[f] = string(b)
		}
		return b, err
	}))
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return p, reload.Render(read), nil
}

// Handler serves every route: what `admitfn serve`, the Knative Functions
// entry point and the tests mount.
func (a *App) Handler() http.Handler { return a.handler }

func (a *App) newResolver(p *policy.Policy) (*resolver.Resolver, error) {
	logger := a.cfg.Logger
	var node []resolver.Option
	if a.node != nil {
		node = append(node, resolver.WithNodeCredentials(a.node))
	}
	return resolver.New(p.Registry, append(node,
		resolver.WithUserAgent(a.cfg.UserAgent),
		resolver.WithTransport(a.Metrics.RoundTripper(resolver.NewTransport(p.Registry))),
		resolver.WithCacheObserver(a.Metrics.CacheResult),
		resolver.WithFailureLog(func(ref string, detail error) {
			logger.Debugw("registry lookup failed", "image", ref, zap.Error(detail))
		}))...)
}

// Watch re-reads the policy file and the caller tokens every interval
// until ctx ends and puts each changed policy (see Reload) and token set
// in force. Without either it returns at once.
func (a *App) Watch(ctx context.Context, interval time.Duration) {
	if a.tokens != nil {
		go a.tokens.Watch(ctx, interval,
			func(n int) { a.cfg.Logger.Infow("caller tokens reloaded", "dir", a.cfg.TokenDir, "tokens", n) },
			func(err error) {
				a.cfg.Logger.Warnw("cannot load the changed caller tokens; the previous ones stay in force", "dir", a.cfg.TokenDir, zap.Error(err))
			})
	}
	if a.cfg.PolicyFile == "" {
		return
	}
	// The policy file and the files the policy in force names (keyFile,
	// trustedRootFile: a rotated Secret) are read together; a change to
	// any is compiled from what this poll read.
	var read map[string]string // what the last poll read, by path
	var unreadable map[string]bool
	reload.PollFrom(ctx, interval, a.loaded,
		func() (string, error) {
			policyFile, err := os.ReadFile(a.cfg.PolicyFile)
			if err != nil {
				return "", err
			}
			read, unreadable = map[string]string{a.cfg.PolicyFile: string(policyFile)}, map[string]bool{}
			for _, f := range a.Reviewer.Policy().Files {
				b, err := os.ReadFile(f)
				if err != nil {
					// Still part of the fingerprint: the file coming back
					// is a change.
					b, unreadable[f] = []byte(err.Error()), true
				}
				read[f] = string(b)
			}
			return reload.Render(read), nil
		},
		func(string) {
			files, failed := read, unreadable
			a.Reload([]byte(files[a.cfg.PolicyFile]), policy.WithReadFile(func(path string) ([]byte, error) {
				if b, ok := files[path]; ok && !failed[path] {
					return []byte(b), nil
				}
				return os.ReadFile(path)
			}))
		},
		func(err error) {
			a.cfg.Logger.Warnw("cannot read the policy file; the policy in force stays", "file", a.cfg.PolicyFile, zap.Error(err))
		})
}

// Reload puts a changed policy in force, or keeps the one in force when
// the new one does not parse: a typo must never open or lock the cluster.
func (a *App) Reload(data []byte, opts ...policy.Option) {
	a.reloading.Lock()
	defer a.reloading.Unlock()
	file, logger := a.cfg.PolicyFile, a.cfg.Logger
	current := a.Reviewer.Policy()
	p, err := policy.Parse(data, opts...)
	if err != nil {
		a.Metrics.Reload("failure")
		logger.Errorw("new policy rejected; the last good policy stays in force", "file", file, "inForce", current.Name, zap.Error(err))
		if a.sender != nil {
			a.sender.PolicyRejected(file, err, current)
		}
		return
	}
	old := a.resolver.Load()
	res := old
	if !reflect.DeepEqual(p.Registry, current.Registry) {
		// New registry settings need a new resolver (and an empty cache).
		var err error
		if res, err = a.newResolver(p); err != nil {
			a.Metrics.Reload("failure")
			logger.Errorw("new policy rejected; the last good policy stays in force", "file", file, zap.Error(err))
			return
		}
	}
	a.Reviewer.Set(p, res)
	if res != old {
		a.resolver.Store(res)
		old.Close() // drops its idle connections; reviews still using it finish
	}
	a.Metrics.Reload("success")
	logger.Infow("policy reloaded", "file", file, "policy", p.Name, "rules", len(p.Rules))
}

// Close flushes queued events for at most grace and drops idle registry
// connections.
func (a *App) Close(grace time.Duration) {
	if a.sender != nil {
		a.sender.Close(grace)
	}
	if res := a.resolver.Load(); res != nil {
		res.Close()
	}
}
