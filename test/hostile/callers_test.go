package hostile

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/admitfn/admitfn/functions/app"
	"github.com/admitfn/admitfn/functions/imagepolicy"
	"github.com/admitfn/admitfn/functions/mutating"
	"github.com/admitfn/admitfn/functions/validating"
)

// TestCorpusWithoutCallerToken replays the whole corpus, as admitfn serves
// it with caller tokens and a CloudEvents sink, from a caller without a
// token: every request gets 401, and the sink hears nothing. One review
// with the token then produces exactly one event, so the sink was
// listening.
func TestCorpusWithoutCallerToken(t *testing.T) {
	var events atomic.Int32
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		events.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(sink.Close)
	tokens := t.TempDir()
	os.WriteFile(filepath.Join(tokens, "token"), []byte("the-apiserver-token"), 0o600)
	a, err := app.New(app.Config{
		TokenDir: tokens,
		Getenv: func(k string) string {
			if k == "K_SINK" {
				return sink.URL
			}
			return ""
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(time.Second) })
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)

	post := func(path string, body []byte, token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	files, err := filepath.Glob("testdata/*/*.json")
	if err != nil || len(files) < 50 {
		t.Fatalf("corpus has %d cases: %v", len(files), err)
	}
	sent := 0
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		paths := []string{validating.Path, mutating.Path}
		if strings.Contains(f, "/imagereview/") {
			paths = []string{imagepolicy.Path}
		}
		for _, path := range paths {
			for _, token := range []string{"", "not-the-token"} {
				if code := post(path, body, token); code != http.StatusUnauthorized {
					t.Errorf("%s to %s with token %q: %d, want 401", f, path, token, code)
				}
				sent++
			}
		}
	}
	review := []byte(`{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx"}],"namespace":"default"}}`)
	if code := post(imagepolicy.Path, review, "the-apiserver-token"); code != http.StatusOK {
		t.Fatalf("a review with the token: %d, want 200", code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for events.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // room for any stray event to arrive
	if n := events.Load(); n != 1 {
		t.Errorf("the sink heard %d events after %d refused requests and 1 accepted one, want 1", n, sent)
	}
}
