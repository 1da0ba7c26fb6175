package imagepolicy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/review"
)

// FuzzImageReview sends arbitrary bodies to the handler: every answer is a
// 200 ImageReview or a 4xx Status, never a panic or a 500.
func FuzzImageReview(f *testing.F) {
	f.Add([]byte(reviewJSON("default", "nginx")))
	f.Add([]byte(reviewJSON("default", "nginx:1.17.1", "")))
	f.Add([]byte(`{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[null]}}`))
	f.Add([]byte(`[]`))
	h := New(review.New(policy.Default(), nil), observe.Observers{})
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			var out map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out["kind"] != "ImageReview" {
				t.Fatalf("200 without an ImageReview: %s", rec.Body)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d for %q", rec.Code, body)
		}
	})
}
