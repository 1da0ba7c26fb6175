package admission

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/admitfn/admitfn/functions/internal/httpx"
	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/review"
	"github.com/admitfn/admitfn/functions/webhook"
)

// echo allows everything and records the budget it was given.
type echo struct {
	budget *review.Budget
	panics bool
}

func (echo) Path() string { return "/validate" }

func (e echo) Admit(_ context.Context, _ review.Snapshot, b review.Budget, _ Review) (*admissionv1.AdmissionResponse, observe.Record) {
	if e.panics {
		panic("boom")
	}
	if e.budget != nil {
		*e.budget = b
	}
	return Allowed(), observe.Record{}
}

// serve is the AdmissionReview codec behind the one handler every
// endpoint has.
func serve(a webhook.Admitter[Review, *admissionv1.AdmissionResponse]) http.Handler {
	return Serve(a, review.New(policy.Default(), nil), observe.Observers{})
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

func TestCodec(t *testing.T) {
	h := serve(echo{})
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
	var b review.Budget
	do(t, serve(echo{budget: &b}), "POST", "application/json", "/validate?timeout=7s", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod"},"operation":"DELETE"}}`)
	if got := b.Allowance(time.Minute); got != 6*time.Second {
		t.Errorf("Admit's budget allows %v, want the request's 7s less its 1s margin", got)
	}
}

// TestPanicAnswersTheReview: a defect in deciding answers that review,
// with its uid and a 500 status, instead of dropping the connection.
func TestPanicAnswersTheReview(t *testing.T) {
	srv := httptest.NewServer(serve(echo{panics: true}))
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
