// Package server runs admitfn's HTTP(S) endpoints: the admission handlers,
// the health probes Knative and kubelets call, TLS with optional client
// certificate verification, and a graceful shutdown.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Health probe paths.
const (
	ReadinessPath = "/health/readiness"
	LivenessPath  = "/health/liveness"
)

// Config says what to serve and how.
type Config struct {
	// Listen is the address, e.g. ":8080" or "127.0.0.1:0".
	Listen string
	// TLSCert and TLSKey are PEM files; both empty means plain HTTP (as
	// behind Knative's ingress, which terminates TLS).
	TLSCert, TLSKey string
	// ClientCA, when set, is a PEM bundle: every client must present a
	// certificate it signed, so only the apiserver can ask.
	ClientCA string
	// Handler serves every path but the health probes, which the server
	// answers itself (readiness follows its shutdown).
	Handler http.Handler
	// ShutdownGrace bounds how long in-flight reviews may finish on stop.
	ShutdownGrace time.Duration
	// BaseContext is the parent of every request's context (it carries the
	// logger).
	BaseContext context.Context
	// CertReloadInterval is how often TLSCert, TLSKey and ClientCA are
	// read again, so renewed files are served without a restart: 0 means
	// every 2 seconds, a negative value never.
	CertReloadInterval time.Duration
	// CertEvents are told of each reload and each failed one.
	CertEvents ReloadEvents
	// ErrorLog receives the HTTP server's own errors (TLS handshakes,
	// malformed requests); nil means the standard logger.
	ErrorLog *log.Logger
}

// Server is a started server.
type Server struct {
	ln     net.Listener
	srv    *http.Server
	ready  atomic.Bool
	scheme string
	grace  time.Duration
	// serveErr is what Serve returned; set before closed is closed.
	serveErr error
	// stopWatch ends the certificate watch.
	stopWatch context.CancelFunc
	// closed is closed when serving has ended, however it ended.
	closed chan struct{}
	// shutdown runs once; every Shutdown returns its result.
	shutdown    sync.Once
	shutdownErr error
}

// Start validates cfg, loads certificates and starts listening. It makes no
// outbound network call, so a cold start is ready in milliseconds.
func Start(cfg Config) (*Server, error) {
	s := &Server{scheme: "http", grace: cfg.ShutdownGrace, stopWatch: func() {}, closed: make(chan struct{})}
	if s.grace == 0 {
		s.grace = 10 * time.Second
	}
	mux := http.NewServeMux()
	if cfg.Handler != nil {
		h := cfg.Handler
		if cfg.ClientCA != "" {
			h = requireClientCert(h)
		}
		mux.Handle("/", h)
	}
	mux.HandleFunc(LivenessPath, func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc(ReadinessPath, func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	s.srv = &http.Server{
		ErrorLog:          cfg.ErrorLog,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// The apiserver waits at most 30s for a webhook.
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 35 * time.Second,
		IdleTimeout:  90 * time.Second,
	}
	if cfg.BaseContext != nil {
		s.srv.BaseContext = func(net.Listener) context.Context { return cfg.BaseContext }
	}
	certs, loaded, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	if certs != nil {
		s.scheme = "https"
		ln = tls.NewListener(ln, certs.listenerConfig())
		if interval := cfg.CertReloadInterval; interval >= 0 {
			if interval == 0 {
				interval = 2 * time.Second
			}
			var ctx context.Context
			ctx, s.stopWatch = context.WithCancel(context.Background())
			go certs.watch(ctx, interval, loaded, cfg.CertEvents)
		}
	}
	s.ln = ln
	s.ready.Store(true)
	go func() {
		s.serveErr = s.srv.Serve(ln)
		// Serving ended, by Shutdown or on its own: nothing is left to
		// reload certificates for.
		s.stopWatch()
		close(s.closed)
	}()
	return s, nil
}

func tlsConfig(cfg Config) (*certSource, string, error) {
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, "", errors.New("--tls-cert and --tls-key go together: give both or neither")
	}
	if cfg.TLSCert == "" {
		if cfg.ClientCA != "" {
			return nil, "", errors.New("--client-ca needs TLS: give --tls-cert and --tls-key too")
		}
		return nil, "", nil
	}
	return newCertSource(cfg.TLSCert, cfg.TLSKey, cfg.ClientCA)
}

// URL is the base URL the server answers on, with a loopback host when it
// listens on all interfaces.
func (s *Server) URL() string {
	addr := s.ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return fmt.Sprintf("%s://%s", s.scheme, net.JoinHostPort(host, fmt.Sprint(addr.Port)))
}

// Wait blocks until ctx ends (SIGTERM, say), then drains for drain(ctx)
// (see Drain), stops taking new connections and lets in-flight reviews
// finish within the grace period.
func (s *Server) Wait(ctx context.Context, drain func(context.Context) time.Duration) error {
	select {
	case <-s.closed:
		return s.serveErr
	case <-ctx.Done():
	}
	if drain != nil {
		s.Drain(drain(ctx))
	}
	return s.Shutdown()
}

// Drain reports not-ready and keeps serving for d, so that probes see the
// 503 and traffic moves away before Shutdown closes the listeners.
func (s *Server) Drain(d time.Duration) {
	s.ready.Store(false)
	select {
	case <-time.After(d):
	case <-s.closed:
	}
}

// Shutdown stops the server gracefully. Calling it again returns what the
// first call did.
func (s *Server) Shutdown() error {
	s.shutdown.Do(func() { s.shutdownErr = s.stop() })
	return s.shutdownErr
}

func (s *Server) stop() error {
	s.ready.Store(false)
	s.stopWatch()
	ctx, cancel := context.WithTimeout(context.Background(), s.grace)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	<-s.closed
	if err := s.serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// requireClientCert answers 401 to a request that presented no client
// certificate. The TLS handshake asks for one and verifies any given
// against --client-ca, but cannot insist: the kubelet's probes of the
// health paths (a static pod's, a Knative pod's) present none, and a
// server that refused them at the handshake would be restarted by its own
// liveness probe.
func requireClientCert(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "a client certificate signed by the --client-ca authority is required", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
