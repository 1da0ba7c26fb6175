// Package harness holds what the test suites under test/ share: free
// loopback ports, HTTPS clients that trust a test CA, polling until a
// condition holds, and the reviews kube-apiserver sends. Each was written
// two to four times before it had a home.
package harness

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FreeAddr reserves a loopback address and releases it for a process to
// take (another process may take it first; the callers retry or fail
// plainly).
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// FreePort is FreeAddr's port, failing t when none can be had.
func FreePort(t testing.TB) int {
	t.Helper()
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TLSClient is an HTTPS client trusting the CA in caFile and presenting
// certs, with a 10 s timeout.
func TLSClient(t testing.TB, caFile string, certs ...tls.Certificate) *http.Client {
	t.Helper()
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("%s holds no PEM certificate", caFile)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}}}
}

// WaitFor calls f every 200 ms until it returns nil, and fails t with
// f's last error once timeout has passed.
func WaitFor(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: %v", what, err)
}

// ImageReview is the imagepolicy.k8s.io/v1alpha1 ImageReview the
// ImagePolicyWebhook plugin sends for a pod in namespace with images.
func ImageReview(namespace string, images ...string) []byte {
	containers := []map[string]string{}
	for _, img := range images {
		containers = append(containers, map[string]string{"image": img})
	}
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "imagepolicy.k8s.io/v1alpha1", "kind": "ImageReview",
		"spec": map[string]any{"namespace": namespace, "containers": containers},
	})
	return b
}

// PodReview is the admission.k8s.io/v1 AdmissionReview a validating
// webhook gets for creating a pod in namespace with images.
func PodReview(uid, namespace string, images ...string) []byte {
	containers := []map[string]string{}
	for i, img := range images {
		containers = append(containers, map[string]string{"name": string(rune('a' + i)), "image": img})
	}
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
		"request": map[string]any{
			"uid": uid, "kind": map[string]string{"version": "v1", "kind": "Pod"}, "operation": "CREATE", "namespace": namespace,
			"object": map[string]any{"spec": map[string]any{"containers": containers}},
		},
	})
	return b
}

// RSS is the resident memory (VmRSS) of the running process pid, in
// bytes, as /proc reports it.
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
