package server

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/admitfn/admitfn/functions/devcert"
)

type pki struct {
	dir               string
	ca                *devcert.CA
	caFile            string
	certFile, keyFile string
	client, stranger  tls.Certificate
	roots             *x509.CertPool
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	ca, err := devcert.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	p := pki{dir: dir, ca: ca, caFile: filepath.Join(dir, "ca.crt"), roots: x509.NewCertPool()}
	if err := os.WriteFile(p.caFile, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	p.roots.AppendCertsFromPEM(ca.PEM)
	srv, err := ca.Server("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if p.certFile, p.keyFile, err = srv.Write(dir, "tls"); err != nil {
		t.Fatal(err)
	}
	cl, err := ca.Client("kube-apiserver")
	if err != nil {
		t.Fatal(err)
	}
	if p.client, err = tls.X509KeyPair(cl.Cert, cl.Key); err != nil {
		t.Fatal(err)
	}
	other, err := devcert.NewCA("other-ca")
	if err != nil {
		t.Fatal(err)
	}
	st, err := other.Client("kube-apiserver")
	if err != nil {
		t.Fatal(err)
	}
	if p.stranger, err = tls.X509KeyPair(st.Cert, st.Key); err != nil {
		t.Fatal(err)
	}
	return p
}

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown() })
	return s
}

func get(client *http.Client, url string) (int, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func TestHealthOverPlainHTTP(t *testing.T) {
	t.Parallel()
	s := start(t, Config{})
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Errorf("URL() = %q", s.URL())
	}
	for _, path := range []string{ReadinessPath, LivenessPath} {
		if code, err := get(http.DefaultClient, s.URL()+path); err != nil || code != http.StatusOK {
			t.Errorf("GET %s = %d, %v; want 200", path, code, err)
		}
	}
}

func TestClientCertificates(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
	tlsOnly := start(t, Config{TLSCert: p.certFile, TLSKey: p.keyFile, Routes: map[string]http.Handler{"/x": ok}})
	mtls := start(t, Config{TLSCert: p.certFile, TLSKey: p.keyFile, ClientCA: p.caFile, Routes: map[string]http.Handler{"/x": ok}})
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.roots, Certificates: certs}}}
	}
	tests := []struct {
		name   string
		srv    *Server
		client *http.Client
		wantOK bool
	}{
		{"TLS, no client certificate", tlsOnly, client(), true},
		{"mTLS, apiserver's certificate", mtls, client(p.client), true},
		{"mTLS, no client certificate", mtls, client(), false},
		{"mTLS, certificate from another CA", mtls, client(p.stranger), false},
		{"TLS, client that does not trust the server", tlsOnly, &http.Client{Timeout: 5 * time.Second}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, err := get(tc.client, tc.srv.URL()+"/x")
			if got := err == nil && code == http.StatusOK; got != tc.wantOK {
				t.Errorf("GET = %d, %v; want success %v", code, err, tc.wantOK)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"cert without key", Config{TLSCert: p.certFile}, "--tls-cert and --tls-key go together"},
		{"client CA without TLS", Config{ClientCA: p.caFile}, "--client-ca needs TLS"},
		{"missing cert file", Config{TLSCert: filepath.Join(p.dir, "nope.crt"), TLSKey: p.keyFile}, "loading --tls-cert"},
		{"client CA not PEM", Config{TLSCert: p.certFile, TLSKey: p.keyFile, ClientCA: p.keyFile}, "holds no PEM certificate"},
		{"bad listen address", Config{Listen: "256.0.0.1:x"}, "listening on"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.Listen == "" {
				tc.cfg.Listen = "127.0.0.1:0"
			}
			s, err := Start(tc.cfg)
			if err == nil {
				_ = s.Shutdown()
				t.Fatalf("Start succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestShutdownLetsInFlightRequestsFinish(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "done")
	})
	s, err := Start(Config{Listen: "127.0.0.1:0", Routes: map[string]http.Handler{"/slow": slow}})
	if err != nil {
		t.Fatal(err)
	}
	url := s.URL()
	result := make(chan string, 1)
	go func() {
		resp, err := http.Get(url + "/slow")
		if err != nil {
			result <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		result <- string(b)
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- s.Shutdown() }()
	// Once shutdown has begun, readiness fails and new connections are refused.
	deadline := time.Now().Add(5 * time.Second)
	for s.ready.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if s.ready.Load() {
		t.Error("still ready after Shutdown began")
	}
	close(release)
	if got := <-result; got != "done" {
		t.Errorf("in-flight request got %q, want it to finish with \"done\"", got)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := get(http.DefaultClient, url+LivenessPath); err == nil {
		t.Error("server still answers after Shutdown")
	}
}
