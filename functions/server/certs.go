package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/admitfn/admitfn/functions/reload"
)

// certSource hands every TLS handshake the serving pair and client CA read
// last from their files. Certificates on the static-pod and standalone
// paths are renewed in place (cert-manager's Secret volume swap, kubeadm
// certs renew, a cron job), and a restart to pick them up would be an
// outage of a fail-closed backend; so the files are re-read on an
// interval and a renewed set takes effect on the next connection.
type certSource struct {
	certFile, keyFile, caFile string
	// current is the *tls.Config new connections get.
	current atomic.Pointer[tls.Config]
}

// newCertSource loads the files once; an error here stops the start.
func newCertSource(certFile, keyFile, caFile string) (*certSource, string, error) {
	s := &certSource{certFile: certFile, keyFile: keyFile, caFile: caFile}
	content, err := s.read()
	if err != nil {
		return nil, "", err
	}
	cfg, err := s.parse(content)
	if err != nil {
		return nil, "", err
	}
	s.current.Store(cfg)
	return s, content.String(), nil
}

// files is what was read of the three files.
type files struct{ cert, key, ca []byte }

func (f files) String() string {
	return string(f.cert) + "\x00" + string(f.key) + "\x00" + string(f.ca)
}

func (s *certSource) read() (files, error) {
	var f files
	var err error
	if f.cert, err = os.ReadFile(s.certFile); err != nil {
		return f, fmt.Errorf("loading --tls-cert %s: %w", s.certFile, err)
	}
	if f.key, err = os.ReadFile(s.keyFile); err != nil {
		return f, fmt.Errorf("loading --tls-key %s: %w", s.keyFile, err)
	}
	if s.caFile != "" {
		if f.ca, err = os.ReadFile(s.caFile); err != nil {
			return f, fmt.Errorf("reading --client-ca: %w", err)
		}
	}
	return f, nil
}

func (s *certSource) parse(f files) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(f.cert, f.key)
	if err != nil {
		return nil, fmt.Errorf("loading --tls-cert %s and --tls-key %s: %w", s.certFile, s.keyFile, err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if s.caFile != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(f.ca) {
			return nil, fmt.Errorf("--client-ca %s holds no PEM certificate", s.caFile)
		}
		c.ClientCAs = pool
		// Verified when given; its absence is refused by path
		// (requireClientCert): health probes come without one.
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c, nil
}

// listenerConfig is the config the listener holds: each handshake asks for
// the current one.
func (s *certSource) listenerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.current.Load(), nil
		},
	}
}

// watch re-reads the files every interval until ctx ends. A set that does
// not load — a renewal caught between writing the certificate and the key,
// say — keeps the previous one in service and is reported; the next change
// is tried again.
func (s *certSource) watch(ctx context.Context, interval time.Duration, loaded string, events ReloadEvents) {
	// Poll reads, then calls changed with what it read, in one goroutine:
	// changed parses the files read last, not a second read of them.
	var last files
	read := func() (string, error) {
		f, err := s.read()
		if err != nil {
			return "", err
		}
		last = f
		return f.String(), nil
	}
	reload.PollFrom(ctx, interval, loaded, read, func(string) {
		cfg, err := s.parse(last)
		if err != nil {
			events.failed(err)
			return
		}
		s.current.Store(cfg)
		events.reloaded(cfg.Certificates[0])
	}, events.failed)
}

// ReloadEvents are told what became of re-reading the TLS files.
type ReloadEvents struct {
	// Reloaded is called with the leaf of each newly loaded serving
	// certificate.
	Reloaded func(leaf *x509.Certificate)
	// Failed is called when changed files could not be loaded; the
	// previous certificate stays in service.
	Failed func(error)
}

func (e ReloadEvents) reloaded(c tls.Certificate) {
	if e.Reloaded == nil {
		return
	}
	leaf := c.Leaf
	if leaf == nil && len(c.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	e.Reloaded(leaf)
}

func (e ReloadEvents) failed(err error) {
	if e.Failed != nil && err != nil {
		e.Failed(err)
	}
}
