package callerauth

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

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func writeTokens(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if content == "" {
			os.Remove(path)
			continue
		}
		if err := os.WriteFile(path+".tmp", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRequire(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTokens(t, dir, map[string]string{"token": "current-token\n", "token.previous": "  old-token ", "..data": "kubelet-entry"})
	tokens, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var refusals []Refusal
	reached := 0
	h := tokens.Require(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { reached++ }), func(r Refusal) { refusals = append(refusals, r) })
	tests := []struct {
		name   string
		header string
		want   int
		why    Refusal
	}{
		{"current token", "Bearer current-token", http.StatusOK, ""},
		{"previous token, during a rotation", "Bearer old-token", http.StatusOK, ""},
		{"scheme in lower case", "bearer current-token", http.StatusOK, ""},
		{"no header", "", http.StatusUnauthorized, Missing},
		{"basic auth", "Basic Y3VycmVudC10b2tlbg==", http.StatusUnauthorized, Missing},
		{"empty bearer", "Bearer ", http.StatusUnauthorized, Missing},
		{"wrong token", "Bearer current-tokeN", http.StatusUnauthorized, Invalid},
		{"prefix of a token", "Bearer current", http.StatusUnauthorized, Invalid},
		{"a token plus more", "Bearer current-token2", http.StatusUnauthorized, Invalid},
		{"the kubelet's dot-entry is no token", "Bearer kubelet-entry", http.StatusUnauthorized, Invalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			refusals, reached = nil, 0
			req := httptest.NewRequest(http.MethodPost, "/imagepolicy", strings.NewReader(`{}`))
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d", rec.Code, tc.want)
			}
			if tc.want == http.StatusOK {
				if reached != 1 || len(refusals) != 0 {
					t.Errorf("handler reached %d times, refusals %v; want the request through", reached, refusals)
				}
				return
			}
			if reached != 0 {
				t.Error("a refused request reached the handler")
			}
			if diff := cmp.Diff([]Refusal{tc.why}, refusals); diff != "" {
				t.Errorf("refusals (-want +got):\n%s", diff)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != `Bearer realm="admitfn"` {
				t.Errorf("WWW-Authenticate %q", got)
			}
			var st metav1.Status
			if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || st.Kind != "Status" || st.Code != 401 || st.Reason != metav1.StatusReasonUnauthorized {
				t.Errorf("body %s (%v), want a 401 metav1.Status", rec.Body, err)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	for name, files := range map[string]map[string]string{
		"no token":          {"..data": "x"},
		"only blank":        {"token": " \n"},
		"two words in file": {"token": "a b"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeTokens(t, dir, files)
			if _, err := Load(dir); err == nil {
				t.Error("Load succeeded, want an error")
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "reading caller tokens") {
		t.Errorf("missing folder: %v", err)
	}
}

// TestRotation adds a token, then removes the old one, as a rotation does;
// a folder emptied by mistake keeps the last set.
func TestRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTokens(t, dir, map[string]string{"token": "first"})
	tokens, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	failed := make(chan error, 10)
	go tokens.Watch(ctx, 5*time.Millisecond, func(int) {}, func(err error) { failed <- err })
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("waited 5s for %s", what)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	writeTokens(t, dir, map[string]string{"token.next": "second"})
	eventually("the new token accepted", func() bool { return tokens.Valid("second") })
	if !tokens.Valid("first") {
		t.Error("the old token was dropped while both files were there")
	}
	writeTokens(t, dir, map[string]string{"token": ""})
	eventually("the old token refused", func() bool { return !tokens.Valid("first") })
	writeTokens(t, dir, map[string]string{"token.next": ""})
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), "holds no caller token") {
			t.Errorf("emptied folder reported as %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an emptied folder was not reported")
	}
	if !tokens.Valid("second") {
		t.Error("an emptied folder dropped the last token set")
	}
}
