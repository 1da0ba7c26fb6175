// Package observe carries each admission decision from the handlers to
// whatever reports it: the decision log, metrics and CloudEvents.
package observe

import (
	"context"
	"time"

	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/admitfn/admitfn/functions/policy"
)

// Record is one decision as a handler saw it.
type Record struct {
	// Handler is imagepolicy, validating or mutating.
	Handler   string
	UID       string
	Kind      string
	Namespace string
	Name      string
	Operation string
	DryRun    bool
	Decision  policy.Decision
	// Images are the images judged, as written.
	Images   []string
	Duration time.Duration
	// Mutation is set by the mutating handler, which judges nothing:
	// "patched" when it answered with a patch, else "unchanged".
	Mutation string
}

// Result is the decision in one word: allowed, denied, warned or
// failed-open; for the mutating handler, patched or unchanged.
func (r Record) Result() string {
	if r.Mutation != "" {
		return r.Mutation
	}
	switch d := r.Decision; {
	case !d.Allowed:
		return "denied"
	case len(d.FailedOpen) > 0:
		return "failed-open"
	case len(d.Warnings()) > 0:
		return "warned"
	default:
		return "allowed"
	}
}

// Rule is the rule that decided: the first enforce violation when denied,
// else the first violation of any mode, else "none".
func (r Record) Rule() string {
	if ds := r.Decision.Denials(); len(ds) > 0 {
		return ds[0].Rule
	}
	if len(r.Decision.Violations) > 0 {
		return r.Decision.Violations[0].Rule
	}
	return "none"
}

// Observer is told of every decision. It must not block: it runs on the
// admission path.
type Observer interface {
	Decided(ctx context.Context, r Record)
}

// Observers tells each of its members.
type Observers []Observer

// Decided implements Observer.
func (os Observers) Decided(ctx context.Context, r Record) {
	for _, o := range os {
		o.Decided(ctx, r)
	}
}

// Log writes one structured line per decision at info, and the request's
// details at debug, to the logger in the context.
type Log struct{}

// Decided implements Observer.
func (Log) Decided(ctx context.Context, r Record) {
	l := logging.FromContext(ctx).Desugar()
	l.Info("decision",
		zap.String("handler", r.Handler),
		zap.String("uid", r.UID),
		zap.String("kind", r.Kind),
		zap.String("namespace", r.Namespace),
		zap.String("name", r.Name),
		zap.String("result", r.Result()),
		zap.String("rule", r.Rule()),
		zap.Bool("dryRun", r.DryRun),
		zap.Any("digests", r.Decision.Digests),
		zap.Duration("duration", r.Duration),
	)
	if ce := l.Check(zap.DebugLevel, "request"); ce != nil {
		ce.Write(
			zap.String("uid", r.UID),
			zap.String("operation", r.Operation),
			zap.Strings("images", r.Images),
			zap.String("reason", r.Decision.Reason()),
			zap.Any("violations", r.Decision.Violations),
			zap.Strings("failedOpen", r.Decision.FailedOpen),
		)
	}
}
