package server

import (
	"context"
	"go.uber.org/goleak"

	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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
	tlsOnly := start(t, Config{TLSCert: p.certFile, TLSKey: p.keyFile, Handler: ok})
	mtls := start(t, Config{TLSCert: p.certFile, TLSKey: p.keyFile, ClientCA: p.caFile, Handler: ok})
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.roots, Certificates: certs}}}
	}
	tests := []struct {
		name   string
		srv    *Server
		client *http.Client
		path   string
		wantOK bool
	}{
		{"TLS, no client certificate", tlsOnly, client(), "/x", true},
		{"mTLS, apiserver's certificate", mtls, client(p.client), "/x", true},
		{"mTLS, no client certificate", mtls, client(), "/x", false},
		{"mTLS, certificate from another CA", mtls, client(p.stranger), "/x", false},
		// The kubelet probes a static pod's and a Knative pod's health
		// without a client certificate; refused, the pod's own liveness
		// probe would restart it into CrashLoopBackOff.
		{"mTLS, no client certificate, liveness probe", mtls, client(), LivenessPath, true},
		{"mTLS, no client certificate, readiness probe", mtls, client(), ReadinessPath, true},
		{"TLS, client that does not trust the server", tlsOnly, &http.Client{Timeout: 5 * time.Second}, "/x", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, err := get(tc.client, tc.srv.URL()+tc.path)
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
	s, err := Start(Config{Listen: "127.0.0.1:0", Handler: slow})
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

// writeAtomically replaces path as a renewal tool does: a new file renamed
// over the old one, so a reader sees the old content or the new, whole.
func writeAtomically(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestCertificateRotationUnderLoad renews the serving certificate while
// clients keep opening connections: every request must succeed, and new
// connections must get the renewed certificate without a restart. The
// certificate is replaced before its key, with a pause between, so
// reloads also see a pair that does not match and must keep the old one.
func TestCertificateRotationUnderLoad(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	var reloads, failures atomic.Int32
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
	s := start(t, Config{TLSCert: p.certFile, TLSKey: p.keyFile, ClientCA: p.caFile,
		Handler:            ok,
		CertReloadInterval: 10 * time.Millisecond,
		CertEvents: ReloadEvents{
			Reloaded: func(*x509.Certificate) { reloads.Add(1) },
			Failed:   func(error) { failures.Add(1) },
		}})
	renewed, err := p.ca.Server("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	renewedLeaf := parseLeaf(t, renewed.Cert)

	var (
		mu      sync.Mutex
		serials = map[string]int{}
		errs    []error
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const workers, maxPerWorker = 4, 3000
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range maxPerWorker {
				select {
				case <-stop:
					return
				default:
				}
				// A transport per request: every request is a new
				// handshake, as the apiserver's first call after a
				// connection drops would be.
				tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.roots, Certificates: []tls.Certificate{p.client}}}
				resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: tr}).Get(s.URL() + "/x")
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						errs = append(errs, fmt.Errorf("status %d", resp.StatusCode))
					}
					serials[resp.TLS.PeerCertificates[0].SerialNumber.String()]++
				}
				mu.Unlock()
				tr.CloseIdleConnections()
			}
		}()
	}
	seen := func(serial string) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return serials[serial] > 0 }
	}
	total := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range serials {
			n += c
		}
		return n
	}
	waitUntil(t, 10*time.Second, "requests before the renewal", func() bool { return total() >= 50 })
	writeAtomically(t, p.certFile, renewed.Cert)
	time.Sleep(50 * time.Millisecond) // reloads meet a certificate without its key
	writeAtomically(t, p.keyFile, renewed.Key)
	waitUntil(t, 10*time.Second, "a connection served the renewed certificate", seen(renewedLeaf.SerialNumber.String()))
	before := total()
	waitUntil(t, 10*time.Second, "requests after the renewal", func() bool { return total() >= before+50 })
	close(stop)
	wg.Wait()

	t.Logf("requests by serving certificate serial: %v; reloads %d, failed reloads %d", serials, reloads.Load(), failures.Load())
	if len(errs) > 0 {
		t.Errorf("%d of %d requests failed during the renewal; first: %v", len(errs), total()+len(errs), errs[0])
	}
	if len(serials) != 2 {
		t.Errorf("connections saw %d certificates, want the old one and the renewed one", len(serials))
	}
	if reloads.Load() != 1 {
		t.Errorf("%d reloads, want 1 (the matching pair)", reloads.Load())
	}
}

// TestClientCARotation moves --client-ca to a new CA through a bundle of
// both, as a CA rollover does: the new CA's clients are let in once the
// bundle is read, and the old CA's are refused once it is gone.
func TestClientCARotation(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	next, err := devcert.NewCA("next-ca")
	if err != nil {
		t.Fatal(err)
	}
	nextPair, err := next.Client("kube-apiserver")
	if err != nil {
		t.Fatal(err)
	}
	nextClient, err := tls.X509KeyPair(nextPair.Cert, nextPair.Key)
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
	s := start(t, Config{TLSCert: p.certFile, TLSKey: p.keyFile, ClientCA: p.caFile,
		Handler: ok, CertReloadInterval: 10 * time.Millisecond})
	accepted := func(cert tls.Certificate) func() bool {
		return func() bool {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.roots, Certificates: []tls.Certificate{cert}}}
			defer tr.CloseIdleConnections()
			code, err := get(&http.Client{Timeout: 5 * time.Second, Transport: tr}, s.URL()+"/x")
			return err == nil && code == http.StatusOK
		}
	}
	refused := func(cert tls.Certificate) func() bool {
		return func() bool { return !accepted(cert)() }
	}
	if !accepted(p.client)() || accepted(nextClient)() {
		t.Fatal("before the rollover: want the old CA's client in and the new CA's out")
	}
	writeAtomically(t, p.caFile, append(append([]byte{}, p.ca.PEM...), next.PEM...))
	waitUntil(t, 10*time.Second, "the new CA's client let in", accepted(nextClient))
	if !accepted(p.client)() {
		t.Error("during the rollover the old CA's client was refused")
	}
	writeAtomically(t, p.caFile, next.PEM)
	waitUntil(t, 10*time.Second, "the old CA's client refused", refused(p.client))
	if !accepted(nextClient)() {
		t.Error("after the rollover the new CA's client was refused")
	}
}

// TestCertificateReloadKeepsServingOnBadFiles replaces the pair with
// something that does not load: the old certificate stays in service and
// the failure is reported.
func TestCertificateReloadKeepsServingOnBadFiles(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	failed := make(chan error, 100)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
	s := start(t, Config{TLSCert: p.certFile, TLSKey: p.keyFile,
		Handler: ok, CertReloadInterval: 10 * time.Millisecond,
		CertEvents: ReloadEvents{Failed: func(err error) { failed <- err }}})
	writeAtomically(t, p.certFile, []byte("not a certificate"))
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), "loading --tls-cert") {
			t.Errorf("reload error %q does not name the file it could not load", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a certificate file that does not parse was not reported")
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.roots}}}
	if code, err := get(client, s.URL()+"/x"); err != nil || code != http.StatusOK {
		t.Errorf("after a bad renewal GET = %d, %v; want the old certificate to keep serving", code, err)
	}
}

func parseLeaf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no PEM block")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDrainKeepsServingWhileNotReady: during Drain, readiness answers 503
// while other paths still answer, so probes move traffic away first; then
// Shutdown closes the listener.
func TestDrainKeepsServingWhileNotReady(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
	s, err := Start(Config{Listen: "127.0.0.1:0", Handler: ok})
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan struct{})
	go func() { s.Drain(500 * time.Millisecond); close(drained) }()
	waitUntil(t, 5*time.Second, "readiness 503", func() bool {
		code, err := get(http.DefaultClient, s.URL()+ReadinessPath)
		return err == nil && code == http.StatusServiceUnavailable
	})
	if code, err := get(http.DefaultClient, s.URL()+"/x"); err != nil || code != http.StatusOK {
		t.Errorf("during the drain GET /x = %d, %v; want it still served", code, err)
	}
	<-drained
	if err := s.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := get(http.DefaultClient, s.URL()+"/x"); err == nil {
		t.Error("still serving after Shutdown")
	}
}

// TestErrorLogReceivesServerErrors: the HTTP server's own errors (here a
// client that does not speak TLS) go to the configured logger.
func TestErrorLogReceivesServerErrors(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	var buf syncBuffer
	s := start(t, Config{TLSCert: p.certFile, TLSKey: p.keyFile, ErrorLog: log.New(&buf, "", 0)})
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL(), "https://"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	io.Copy(io.Discard, conn)
	conn.Close()
	waitUntil(t, 5*time.Second, "the handshake error logged", func() bool { return strings.Contains(buf.String(), "TLS handshake error") })
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

// TestShutdownTwice: a second Shutdown returns what the first did instead
// of waiting for good on a serve result already taken.
func TestShutdownTwice(t *testing.T) {
	t.Parallel()
	s, err := Start(Config{Listen: "127.0.0.1:0", ShutdownGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan [2]error, 1)
	go func() { done <- [2]error{s.Shutdown(), s.Shutdown()} }()
	select {
	case errs := <-done:
		if errs[0] != nil || errs[1] != nil {
			t.Errorf("Shutdown, Shutdown = %v, %v; want nil, nil", errs[0], errs[1])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second Shutdown did not return")
	}
}

// TestServingThatFailsStopsTheCertificateWatch: serving ends on its own
// (its listener closed under it); Wait reports it, and the certificate
// watch it started is not left running.
func TestServingThatFailsStopsTheCertificateWatch(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	p := newPKI(t)
	s, err := Start(Config{Listen: "127.0.0.1:0", TLSCert: p.certFile, TLSKey: p.keyFile, CertReloadInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s.ln.Close()
	if err := s.Wait(context.Background(), nil); err == nil {
		t.Error("Wait = nil after the listener failed; want the serve error")
	}
}
