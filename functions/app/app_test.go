package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/functions/review"
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

// TestWatchReloadsWhenAKeyFileRotates: the policy names its key by
// keyFile (a mounted Secret); replacing that file, with the policy file
// untouched, puts the new key in force: an image signed with it is
// admitted, one signed with the old key no longer is.
func TestWatchReloadsWhenAKeyFileRotates(t *testing.T) {
	reg := registrytest.New(t)
	oldKey, newKey := registrytest.NewKey(t), registrytest.NewKey(t)
	byOld := reg.Push("app:old", registrytest.Image(t, nil))
	byNew := reg.Push("app:new", registrytest.Image(t, nil))
	reg.Sign("app", byOld, oldKey.Sign)
	reg.Sign("app", byNew, newKey.Sign)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "release.pub")
	if err := os.WriteFile(keyFile, []byte(oldKey.PEM), 0o644); err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, []byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: [%q]}
  rules:
  - name: signed
    signatures:
      authorities: [{name: release, keyFile: %s}]
`, reg.Host(), keyFile)), 0o644)
	a, err := New(Config{PolicyFile: policyFile, Handlers: []string{"imagepolicy"}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Watch(ctx, 20*time.Millisecond)
	admitted := func(tag string) bool {
		d := a.Reviewer.Review(context.Background(), review.Budget{}, policy.Request{Namespace: "default", Images: []policy.Image{{Ref: reg.Ref("app", tag)}}})
		return d.Allowed
	}
	if !admitted(":old") || admitted(":new") {
		t.Fatal("before the rotation: want the old key's image admitted and the new key's denied")
	}
	if err := os.WriteFile(keyFile, []byte(newKey.PEM), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !admitted(":new") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !admitted(":new") || admitted(":old") {
		t.Fatal("after the key file changed: want the new key's image admitted and the old key's denied")
	}
}
