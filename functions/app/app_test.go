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
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

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

// TestWatchKeepsAChangeMadeBeforeItStarts: the policy file changes after
// New loaded it and before the watcher's first poll. The watcher's
// baseline is what New loaded, so the change is put in force.
func TestWatchKeepsAChangeMadeBeforeItStarts(t *testing.T) {
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	write := func(name string) {
		t.Helper()
		doc := fmt.Sprintf("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: %s}\nspec:\n  rules:\n  - {name: no-latest, tags: {denyLatest: true}}\n", name)
		if err := os.WriteFile(policyFile, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("first")
	a, err := New(Config{PolicyFile: policyFile, Handlers: []string{"imagepolicy"}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(time.Second)
	write("second")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Watch(ctx, 10*time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for a.Reviewer.Policy().Name != "second" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := a.Reviewer.Policy().Name; got != "second" {
		t.Errorf("policy in force is %q, want %q: the change made before the watcher started was lost", got, "second")
	}
}

// TestNewThatFailsLeavesNothingRunning: New fails after it started the
// event sender (an unknown handler comes later); nothing of it may keep
// running.
func TestNewThatFailsLeavesNothingRunning(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	sink := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer sink.Close()
	env := map[string]string{"K_SINK": sink.URL}
	_, err := New(Config{Handlers: []string{"validating", "no-such-handler"}, Getenv: func(k string) string { return env[k] }})
	if err == nil || !strings.Contains(err.Error(), `unknown handler "no-such-handler"`) {
		t.Fatalf("New = %v, want an unknown-handler error", err)
	}
}

// TestConcurrentReloadsStayInStep: reloads that each change the registry
// settings, several at once; afterwards the reviewer asks the resolver
// the App closes.
func TestConcurrentReloadsStayInStep(t *testing.T) {
	a, err := New(Config{Handlers: []string{"imagepolicy"}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(time.Second)
	for round := range 50 {
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				a.Reload([]byte(fmt.Sprintf("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  registry: {timeout: %ds}\n  rules:\n  - {name: r, resolvable: true}\n", 1+round*4+i)))
			})
		}
		wg.Wait()
		if got, want := a.Reviewer.FactSource(), review.FactSource(a.resolver.Load()); got != want {
			t.Fatalf("round %d: the reviewer asks another resolver than the one the App holds", round)
		}
	}
}
