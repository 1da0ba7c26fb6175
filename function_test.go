package function

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInstancedContract(t *testing.T) {
	f := New()
	ctx := context.Background()
	if ready, _ := f.Ready(ctx); ready {
		t.Fatal("ready before Start")
	}
	rec := httptest.NewRecorder()
	f.Handle(rec, httptest.NewRequest(http.MethodPost, "/imagepolicy", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("before Start: status %d, want 503", rec.Code)
	}
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, []byte("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: fn}\nspec:\n  rules:\n  - name: no-busybox\n    repositories: {deny: [busybox]}\n"), 0o644)
	if err := f.Start(ctx, map[string]string{"ADMITFN_POLICY": policyFile, "ADMITFN_HANDLERS": "imagepolicy,validating", "ADMITFN_ALLOW_ANY_CALLER": "true"}); err != nil {
		t.Fatal(err)
	}
	if ready, err := f.Ready(ctx); !ready || err != nil {
		t.Fatalf("Ready = %v, %v after Start", ready, err)
	}
	if alive, err := f.Alive(ctx); !alive || err != nil {
		t.Fatalf("Alive = %v, %v", alive, err)
	}
	ask := func(path, body string) (int, string) {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		f.Handle(rec, req)
		return rec.Code, rec.Body.String()
	}
	code, body := ask("/imagepolicy", `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"busybox:1.36"}]}}`)
	var ir struct {
		Status struct {
			Allowed bool
			Reason  string
		}
	}
	if err := json.Unmarshal([]byte(body), &ir); err != nil || code != 200 || ir.Status.Allowed || !strings.Contains(ir.Status.Reason, `"no-busybox"`) {
		t.Errorf("ImageReview: %d %s; want a denial by the file's policy", code, body)
	}
	if code, _ := ask("/validate", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod"},"operation":"CREATE","object":{"spec":{"containers":[{"image":"nginx:1"}]}}}}`); code != 200 {
		t.Errorf("/validate: status %d", code)
	}
	if code, _ := ask("/mutate", `{}`); code != http.StatusNotFound {
		t.Errorf("/mutate was not asked for but answered %d", code)
	}
	stopCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := f.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	if ready, _ := f.Ready(ctx); ready {
		t.Error("ready after Stop")
	}
	if err := New().Start(ctx, map[string]string{"ADMITFN_POLICY": filepath.Join(dir, "missing.yaml"), "ADMITFN_ALLOW_ANY_CALLER": "true"}); err == nil {
		t.Error("Start with a missing policy file succeeded")
	}
}

// TestStartIsClosedByDefault: without caller tokens the function does not
// serve unless told that anyone may ask; with them, a request without a
// token is refused.
func TestStartIsClosedByDefault(t *testing.T) {
	ctx := context.Background()
	err := New().Start(ctx, map[string]string{})
	if err == nil || !strings.Contains(err.Error(), "ADMITFN_TOKEN_DIR is not set") {
		t.Fatalf("Start without caller tokens = %v; want a refusal naming ADMITFN_TOKEN_DIR", err)
	}
	tokens := t.TempDir()
	if err := os.WriteFile(filepath.Join(tokens, "apiserver"), []byte("s3cret-token-of-enough-length"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := New()
	if err := f.Start(ctx, map[string]string{"ADMITFN_TOKEN_DIR": tokens}); err != nil {
		t.Fatal(err)
	}
	defer f.Stop(ctx)
	review := `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx:1.17.1"}]}}`
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"s3cret-token-of-enough-length", http.StatusOK}} {
		req := httptest.NewRequest(http.MethodPost, "/imagepolicy", strings.NewReader(review))
		req.Header.Set("Content-Type", "application/json")
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		rec := httptest.NewRecorder()
		f.Handle(rec, req)
		if rec.Code != tc.want {
			t.Errorf("token %q: status %d, want %d", tc.token, rec.Code, tc.want)
		}
	}
}
