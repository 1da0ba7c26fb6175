package admission

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/admitfn/admitfn/functions/internal/httpx"
	"github.com/admitfn/admitfn/functions/review"
)

// echo allows everything and records the timeout parameter the handler
// started the review's budget from.
func echo(t *testing.T) (Handler, *string) {
	var timeout string
	return Handler{
		Admit: func(context.Context, review.Budget, *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
			return Allowed()
		},
		Budget: func(timeoutParam string) review.Budget {
			timeout = timeoutParam
			return review.Budget{}
		},
	}, &timeout
}

type reply struct {
	HTTP       int
	APIVersion string
	Kind       string
	UID        string
	Allowed    bool
	Code       int32
}

func do(t *testing.T, h http.Handler, method, contentType, url, body string) (reply, string) {
	t.Helper()
	req := httptest.NewRequest(method, url, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("reply is not an AdmissionReview: %v: %s", err, rec.Body)
	}
	if out.Response == nil {
		t.Fatalf("reply has no response: %s", rec.Body)
	}
	r := reply{HTTP: rec.Code, APIVersion: out.APIVersion, Kind: out.Kind, UID: string(out.Response.UID), Allowed: out.Response.Allowed}
	msg := ""
	if out.Response.Result != nil {
		r.Code, msg = out.Response.Result.Code, out.Response.Result.Message
	}
	return r, msg
}

func TestHandler(t *testing.T) {
	h, _ := echo(t)
	const pod = `"kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":{"containers":[]}}`
	tests := []struct {
		name, method, contentType, body string
		want                            reply
		message                         string
	}{
		{"v1", "POST", "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1",` + pod + `}}`,
			reply{200, V1, "AdmissionReview", "u1", true, 0}, ""},
		{"v1beta1 answered in v1beta1", "POST", "application/json; charset=utf-8", `{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u2",` + pod + `}}`,
			reply{200, V1beta1, "AdmissionReview", "u2", true, 0}, ""},
		{"GET", "GET", "", "", reply{405, V1, "AdmissionReview", "", false, 405}, "method GET is not allowed"},
		{"text/plain", "POST", "text/plain", `{}`, reply{415, V1, "AdmissionReview", "", false, 415}, `content type "text/plain"`},
		{"too large", "POST", "application/json", `{"apiVersion":"` + strings.Repeat("x", httpx.MaxAdmissionReview) + `"}`, reply{413, V1, "AdmissionReview", "", false, 413}, "exceeds"},
		{"malformed", "POST", "application/json", `{"apiVersion":`, reply{400, V1, "AdmissionReview", "", false, 400}, "not a valid AdmissionReview"},
		{"wrong version", "POST", "application/json", `{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{"uid":"u3"}}`, reply{400, V1, "AdmissionReview", "u3", false, 400}, `apiVersion "admission.k8s.io/v2" is not supported`},
		{"wrong kind", "POST", "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"ImageReview","request":{"uid":"u4"}}`, reply{400, V1, "AdmissionReview", "u4", false, 400}, `kind "ImageReview" is not supported`},
		{"no request", "POST", "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, reply{400, V1, "AdmissionReview", "", false, 400}, "has no request"},
		{"null request", "POST", "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}`, reply{400, V1, "AdmissionReview", "", false, 400}, "has no request"},
		{"no uid", "POST", "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{` + pod + `}}`, reply{400, V1, "AdmissionReview", "", false, 400}, "has no uid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, msg := do(t, h, tc.method, tc.contentType, "/validate", tc.body)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if !strings.Contains(msg, tc.message) || strings.Contains(msg, "\n") {
				t.Errorf("message %q, want one line containing %q", msg, tc.message)
			}
		})
	}
}

func TestHandlerHonoursTimeout(t *testing.T) {
	h, timeout := echo(t)
	do(t, h, "POST", "application/json", "/validate?timeout=7s", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod"},"operation":"DELETE"}}`)
	if *timeout != "7s" {
		t.Errorf("Admit's context was bound with timeout %q, want the request's 7s", *timeout)
	}
}

// TestPanicAnswersTheReview: a defect in deciding answers that review,
// with its uid and a 500 status, instead of dropping the connection.
func TestPanicAnswersTheReview(t *testing.T) {
	srv := httptest.NewServer(Handler{Admit: func(context.Context, review.Budget, *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
		panic("boom")
	}})
	defer srv.Close()
	resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-panic"}}`))
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer resp.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.Response == nil || out.Response.UID != "u-panic" || out.Response.Allowed || out.Response.Result.Code != http.StatusInternalServerError ||
		!strings.Contains(out.Response.Result.Message, "internal error (boom)") {
		t.Errorf("answer %+v, want an errored review with the uid and a 500", out.Response)
	}
}
