// Package function is admitfn's root function for Knative Functions
// tooling (func.yaml): it follows the instanced HTTP contract (New, Handle,
// Start, Stop, Ready, Alive) and routes to the same handlers as
// `admitfn serve`, assembled by functions/app.
//
// Start reads its configuration from the map the runtime passes:
// ADMITFN_POLICY (a policy file, default the embedded policy),
// ADMITFN_HANDLERS (comma-separated, default imagepolicy: func.yaml
// describes the image-policy function), ADMITFN_TOKEN_DIR (a
// folder of caller tokens, as `admitfn serve --token-dir`),
// ADMITFN_CREDENTIAL_PROVIDER_CONFIG and ADMITFN_CREDENTIAL_PROVIDER_BIN_DIR
// (the kubelet's credential provider plugins, as `admitfn serve
// --image-credential-provider-config`) and the Knative variables
// K_SINK, K_CE_OVERRIDES and K_SERVICE.
//
// A function deployed with `func deploy` is public behind Knative's
// ingress, as the ko-deployed Services are: Start refuses to serve without
// ADMITFN_TOKEN_DIR (func.yaml mounts the admitfn-callers Secret there)
// unless ADMITFN_ALLOW_ANY_CALLER=true says, for a local `func run`, that
// anyone may ask.
package function

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"knative.dev/pkg/logging"

	"github.com/admitfn/admitfn/functions/app"
	"github.com/admitfn/admitfn/functions/gctune"
)

// Function is one instance of the admission function.
type Function struct {
	mu     sync.RWMutex
	app    *app.App
	mux    http.Handler
	ctx    context.Context
	cancel context.CancelFunc
}

// New returns an instance; it serves once Start has run.
func New() *Function { return &Function{} }

// Start assembles the handlers from cfg and watches the policy file.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	// As `admitfn serve` does: the same logger name (loglevel.admitfn)
	// and garbage collector tuning for a server.
	logger, _ := logging.NewLogger("", "info")
	logger = logger.Named("admitfn")
	gctune.Choose(os.Getenv, os.ReadFile).Apply()
	if cfg["ADMITFN_TOKEN_DIR"] == "" && cfg["ADMITFN_ALLOW_ANY_CALLER"] != "true" {
		return errors.New("ADMITFN_TOKEN_DIR is not set: a deployed function would answer anyone who reaches its URL. " +
			"Mount the admitfn-callers Secret and set ADMITFN_TOKEN_DIR to it (func.yaml does), or set ADMITFN_ALLOW_ANY_CALLER=true for a local run")
	}
	handlers := []string{"imagepolicy"}
	if h := cfg["ADMITFN_HANDLERS"]; h != "" {
		handlers = strings.Split(h, ",")
	}
	a, err := app.New(app.Config{
		PolicyFile: cfg["ADMITFN_POLICY"],
		Handlers:   handlers,
		Logger:     logger,
		Getenv:     func(k string) string { return cfg[k] },
		UserAgent:  "admitfn-function",
		TokenDir:   cfg["ADMITFN_TOKEN_DIR"],
		// The node's credentials, for the ImageReviews that carry no
		// pod's: the kubelet's credential provider plugins.
		CredentialProviderConfig: cfg["ADMITFN_CREDENTIAL_PROVIDER_CONFIG"],
		CredentialProviderBinDir: cfg["ADMITFN_CREDENTIAL_PROVIDER_BIN_DIR"],
	})
	if err != nil {
		return err
	}
	mux := a.Handler()
	watchCtx, cancel := context.WithCancel(logging.WithLogger(context.WithoutCancel(ctx), logger))
	go a.Watch(watchCtx, 2*time.Second)
	f.mu.Lock()
	f.app, f.mux, f.ctx, f.cancel = a, mux, logging.WithLogger(context.Background(), logger), cancel
	f.mu.Unlock()
	return nil
}

// Handle routes a request to the handler for its path.
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {
	f.mu.RLock()
	mux, ctx := f.mux, f.ctx
	f.mu.RUnlock()
	if mux == nil {
		http.Error(w, "admitfn is starting", http.StatusServiceUnavailable)
		return
	}
	mux.ServeHTTP(w, r.WithContext(logging.WithLogger(r.Context(), logging.FromContext(ctx))))
}

// Stop stops watching the policy and flushes queued events within ctx's
// deadline (5 s without one).
func (f *Function) Stop(ctx context.Context) error {
	f.mu.Lock()
	a, cancel := f.app, f.cancel
	f.app, f.mux = nil, nil
	f.mu.Unlock()
	if a == nil {
		return errors.New("admitfn was not started")
	}
	cancel()
	grace := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		grace = time.Until(dl)
	}
	a.Close(grace)
	return nil
}

// Ready reports whether Start has assembled the handlers.
func (f *Function) Ready(context.Context) (bool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.mux != nil, nil
}

// Alive reports that the instance can answer: it holds no lock a request
// could wait on for long.
func (f *Function) Alive(context.Context) (bool, error) { return true, nil }
