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
	if err := f.Start(ctx, map[string]string{"ADMITFN_POLICY": policyFile, "ADMITFN_HANDLERS": "imagepolicy,validating"}); err != nil {
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
	if err := New().Start(ctx, map[string]string{"ADMITFN_POLICY": filepath.Join(dir, "missing.yaml")}); err == nil {
		t.Error("Start with a missing policy file succeeded")
	}
}
