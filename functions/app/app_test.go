package app

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/admitfn/admitfn/functions/registrytest"
)

// TestReloadClosesTheOldResolversConnections: a policy reload that changes
// the registry settings replaces the resolver, and the old one's idle
// connections to the registry are closed rather than left to time out.
func TestReloadClosesTheOldResolversConnections(t *testing.T) {
	reg := registrytest.New(t)
	reg.Push("app:v1", registrytest.Image(t, nil))
	host := reg.Host()

	policy := func(cacheTTL string) []byte {
		return []byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: [%q], cacheTTL: %s}
  rules:
  - {name: resolvable, resolvable: true}
`, host, cacheTTL))
	}
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, policy("1m"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{PolicyFile: file, Handlers: []string{"imagepolicy"}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(time.Second)
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	review := fmt.Sprintf(`{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"namespace":"default","containers":[{"image":"%s/app:v1"}]}}`, host)
	resp, err := http.Post(srv.URL+"/imagepolicy", "application/json", bytes.NewReader([]byte(review)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"allowed":true`) {
		t.Fatalf("review: %s", body)
	}
	before := reg.ClosedConnections()
	a.Reload(policy("2m"))
	deadline := time.Now().Add(5 * time.Second)
	for reg.ClosedConnections() == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if reg.ClosedConnections() == before {
		t.Fatal("the old resolver's connection to the registry stayed open after the reload")
	}
}
