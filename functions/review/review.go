// Package review is what every admission handler calls: it asks the
// resolver for the image facts the policy needs, then lets the pure policy
// engine decide.
package review

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/internal/httpx"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/pullcreds"
	"github.com/admitfn/admitfn/functions/pullsecrets"
	"github.com/admitfn/admitfn/functions/resolver"
)

// FactSource answers questions about images; *resolver.Resolver is one.
type FactSource interface {
	Resolve(ctx context.Context, ref imageref.Ref, level policy.Level) policy.Facts
}

// Reviewer judges requests against a policy that can be replaced while it
// serves (hot reload): each review uses one policy from start to end.
type Reviewer struct {
	state    atomic.Pointer[state]
	now      func() time.Time
	parallel int
	refs     *imageref.Cache
	// secrets reads pods' pull Secrets; nil when admitfn cannot reach
	// the apiserver.
	secrets *pullsecrets.Reader
}

// parsedRefs bounds the reviewer's cache of parsed references.
const parsedRefs = 4096

type state struct {
	policy *policy.Policy
	facts  FactSource
}

// Option configures a Reviewer.
type Option func(*Reviewer)

// WithClock sets the clock rules such as maxAge read.
func WithClock(now func() time.Time) Option { return func(r *Reviewer) { r.now = now } }

// WithPullSecrets has reviews of pods read their pull Secrets with sr and
// ask registries with them, as the pod's kubelet would.
func WithPullSecrets(sr *pullsecrets.Reader) Option {
	return func(r *Reviewer) { r.secrets = sr }
}

// New returns a Reviewer. facts may be nil when the policy never needs the
// registry; a rule that does then fails as if the registry were down.
func New(p *policy.Policy, facts FactSource, opts ...Option) *Reviewer {
	r := &Reviewer{now: time.Now, parallel: 8, refs: imageref.NewCache(parsedRefs)}
	r.Set(p, facts)
	for _, o := range opts {
		o(r)
	}
	return r
}

// Set replaces the policy and the fact source for the reviews that start
// from now on.
func (r *Reviewer) Set(p *policy.Policy, facts FactSource) {
	r.state.Store(&state{policy: p, facts: facts})
}

// Policy returns the policy the reviewer applies.
func (r *Reviewer) Policy() *policy.Policy { return r.state.Load().policy }

// FactSource returns the fact source the reviewer asks.
func (r *Reviewer) FactSource() FactSource { return r.state.Load().facts }

// Budget is how long a review may wait for registries: from when the
// review began, at most the apiserver's ?timeout= less a margin, and at
// most the policy's registry timeout (Allowance). The zero Budget allows
// the policy's registry timeout from when the lookups start.
type Budget struct {
	start        time.Time
	timeoutParam string
}

// BudgetFor starts a review's budget now, on the reviewer's clock, with the
// apiserver's ?timeout= parameter ("" when there is none).
func (r *Reviewer) BudgetFor(timeoutParam string) Budget {
	return Budget{start: r.now(), timeoutParam: timeoutParam}
}

// Snapshot is the policy and fact source in force when it was taken, for
// one review from start to end: a handler that reads the policy to decode
// a request (its declared kinds) and then judges it must judge it by that
// same policy, whatever a reload puts in force meanwhile.
type Snapshot struct {
	r  *Reviewer
	st *state
}

// Snapshot takes the policy and fact source in force now.
func (r *Reviewer) Snapshot() Snapshot { return Snapshot{r: r, st: r.state.Load()} }

// Policy is the snapshot's policy.
func (s Snapshot) Policy() *policy.Policy { return s.st.policy }

// Allowance is how long the review may wait for registries in all (see
// the package function Allowance), from when the budget started.
func (b Budget) Allowance(policyCap time.Duration) time.Duration {
	return Allowance(b.timeoutParam, policyCap)
}

// Review is Reviewer.Review on a snapshot taken now.
func (r *Reviewer) Review(ctx context.Context, b Budget, req policy.Request) policy.Decision {
	return r.Snapshot().Review(ctx, b, req)
}

// Review gathers the facts the request needs, each distinct image once and
// a few at a time, within b, and evaluates the snapshot's policy. A lookup
// still running when b runs out counts as a registry failure.
func (s Snapshot) Review(ctx context.Context, b Budget, req policy.Request) policy.Decision {
	r, st := s.r, s.st
	need := map[string]lookup{}
	if req.Refs == nil {
		req.Refs = make(map[string]imageref.Ref, len(req.Images))
	}
	for _, img := range req.Images {
		if _, seen := req.Refs[img.Ref]; seen {
			continue
		}
		ref, err := r.refs.Parse(img.Ref)
		if err != nil {
			continue // the engine reports it
		}
		req.Refs[img.Ref] = ref
		if level := st.policy.Need(req, ref); level > policy.LevelName {
			need[img.Ref] = lookup{ref, level}
		}
	}
	return st.policy.Evaluate(req, s.lookup(ctx, b, req, need), r.now())
}

// lookup gathers the facts of need with the credentials the kubelet would
// pull req's pod's images with (its pull Secrets, then the node's); a
// refusal's reason says which were tried.
func (s Snapshot) lookup(ctx context.Context, b Budget, req policy.Request, need map[string]lookup) map[string]policy.Facts {
	r, st := s.r, s.st
	if len(need) == 0 || req.Puller == nil {
		return r.gather(ctx, st, b, need)
	}
	creds, err := r.podCredentials(ctx, st.policy, req)
	if err != nil {
		// The kubelet pulls none of the pod's images: nor is any judged.
		facts := make(map[string]policy.Facts, len(need))
		for raw, l := range need {
			facts[raw] = policy.Facts{Level: l.level, Malformed: err}
		}
		return facts
	}
	facts := r.gather(resolver.WithCredentials(ctx, creds), st, b, need)
	for raw, f := range facts {
		if f.Unauthorized && f.Err != nil {
			f.Err = fmt.Errorf("%w; %s", f.Err, creds.describe())
			facts[raw] = f
		}
	}
	return facts
}

// podCredentials are the credentials the kubelet would pull req's pod's
// images with, as far as admitfn may read them, and what a refusal's
// reason says about them.
type podCredentials struct {
	resolver.Credentials
	// describe is said only of a refusal: most reviews need no reason.
	describe func() string
}

// podCredentials reads the pull Secrets of req's pod, where the policy
// lets admitfn read them. The error is a pull Secret the kubelet cannot
// read.
func (r *Reviewer) podCredentials(ctx context.Context, p *policy.Policy, req policy.Request) (podCredentials, error) {
	switch {
	case r.secrets == nil:
		return podCredentials{Credentials: pullcreds.Keyrings{}, describe: func() string { return "admitfn reads no pull secrets (it has no access to the apiserver)" }}, nil
	case !p.PullSecrets.Reads(req.Namespace):
		return podCredentials{Credentials: pullcreds.Keyrings{}, describe: func() string {
			return fmt.Sprintf("admitfn reads no pull secrets in namespace %s (spec.registry.pullSecrets)", req.Namespace)
		}}, nil
	}
	c, err := r.secrets.Credentials(ctx, pullsecrets.Pod{Namespace: req.Namespace, Secrets: req.Puller.Secrets, ServiceAccount: req.Puller.ServiceAccount})
	if err != nil {
		return podCredentials{}, err
	}
	return podCredentials{Credentials: c, describe: c.Describe}, nil
}

// Facts asks the snapshot's fact source about each image (as written) of
// req to the level given, a few at a time, with the credentials its pod
// would be pulled with. Images that do not parse are left out.
func (s Snapshot) Facts(ctx context.Context, b Budget, req policy.Request, need map[string]policy.Level) map[string]policy.Facts {
	lookups := make(map[string]lookup, len(need))
	for raw, level := range need {
		if ref, err := s.r.refs.Parse(raw); err == nil {
			lookups[raw] = lookup{ref, level}
		}
	}
	return s.lookup(ctx, b, req, lookups)
}

// lookup is one image to ask about, parsed once, and how much to ask.
type lookup struct {
	ref   imageref.Ref
	level policy.Level
}

// gather asks about each image of need (keyed by the reference as
// written), a few at a time.
func (r *Reviewer) gather(ctx context.Context, st *state, b Budget, need map[string]lookup) map[string]policy.Facts {
	facts := make(map[string]policy.Facts, len(need))
	src := st.facts
	if len(need) == 0 || src == nil {
		return facts
	}
	// The timer is set only here, for a review that looks something up:
	// most need no registry, and a timer per request cost more than their
	// whole policy evaluation.
	if !b.start.IsZero() {
		left := b.Allowance(st.policy.Registry.Timeout) - r.now().Sub(b.start)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, left)
		defer cancel()
	}
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(r.parallel)
	for raw, l := range need {
		ref, level := l.ref, l.level
		g.Go(func() error {
			// A panic here would end the process, not just this review.
			defer httpx.Recovered(ctx, func(err error) {
				mu.Lock()
				facts[raw] = policy.Facts{Level: level, Err: err}
				mu.Unlock()
			})
			f := src.Resolve(ctx, ref, level)
			mu.Lock()
			facts[raw] = f
			mu.Unlock()
			return nil
		})
	}
	_ = g.Wait() // the lookups report through facts, never an error
	return facts
}

// Allowance is how long a review may spend on registry lookups: the
// timeout the apiserver appends to the webhook URL ("?timeout=10s") less a
// margin for the reply to travel back, capped by the policy's registry
// timeout.
func Allowance(timeoutParam string, policyCap time.Duration) time.Duration {
	budget := policyCap
	if d, err := time.ParseDuration(timeoutParam); err == nil && d > 0 {
		d -= min(time.Second, d/5)
		budget = min(budget, d)
	}
	return budget
}
