package admission

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/review"
)

// reader reads the facts of each request, as the validating handler
// does, and allows it.
type reader struct{}

func (reader) Path() string { return "/validate" }

func (reader) Admit(_ context.Context, _ review.Snapshot, _ review.Budget, r Review) (*admissionv1.AdmissionResponse, observe.Record) {
	if _, err := Read(r.Request, nil); err != nil {
		return Errored(string(r.Request.UID), http.StatusBadRequest, err.Error()), observe.Record{}
	}
	return Allowed(), observe.Record{}
}

// FuzzAdmissionReview decodes arbitrary bodies and reads the facts of what
// decodes: every answer is a well-formed review, never a panic.
func FuzzAdmissionReview(f *testing.F) {
	f.Add(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Deployment"},"operation":"CREATE","object":{"spec":{"template":{"spec":{"containers":[{"image":"nginx"}]}}}}}}`)
	f.Add(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Node"},"operation":"UPDATE","object":{"metadata":{"labels":{"a":"b"}}},"oldObject":{}}}`)
	f.Add(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod"},"subResource":"ephemeralcontainers","operation":"UPDATE","object":{"spec":{"ephemeralContainers":[{"image":"x"}]}},"oldObject":{"spec":{}}}}`)
	f.Add(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Service"},"operation":"CREATE","object":{"spec":{"type":"LoadBalancer"}}}}`)
	h := serve(reader{})
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "/validate", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("status %d without a well-formed review: %s", rec.Code, rec.Body)
		}
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest && rec.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d", rec.Code)
		}
	})
}
