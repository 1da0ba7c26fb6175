// Package admission is the AdmissionReview side shared by the validating
// and mutating handlers: decoding admission.k8s.io/v1 and v1beta1 reviews,
// answering in the version asked with the request's uid, and turning an
// AdmissionRequest into the facts the policy engine reads.
package admission

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/admitfn/admitfn/functions/internal/httpx"
	reviewpkg "github.com/admitfn/admitfn/functions/review"
)

// Versions this package answers.
const (
	V1      = "admission.k8s.io/v1"
	V1beta1 = "admission.k8s.io/v1beta1"
)

// Func decides one request within b. It never returns nil.
type Func func(ctx context.Context, b reviewpkg.Budget, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse

// Handler serves AdmissionReviews with Admit.
type Handler struct {
	// Route is the path it is mounted at.
	Route string
	// Admit decides.
	Admit Func
	// Budget starts a request's budget from the apiserver's ?timeout=
	// parameter (review.Reviewer.BudgetFor); nil gives the zero Budget.
	Budget func(timeoutParam string) reviewpkg.Budget
}

// Path is where the handler is mounted.
func (h Handler) Path() string { return h.Route }

// ServeHTTP checks the request, decodes the review, calls Admit and encodes
// its answer in the review's version. Input it cannot use is answered with
// a well-formed review whose status carries the HTTP code and a message.
func (h Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, herr := httpx.ReadJSONPost(w, r, httpx.MaxAdmissionReview)
	if herr != nil {
		write(w, V1, herr.Code, Errored("", herr.Code, herr.Message))
		return
	}
	review, version, err := Decode(body)
	if err != nil {
		uid := ""
		if review != nil && review.Request != nil {
			uid = string(review.Request.UID)
		}
		write(w, version, http.StatusBadRequest, Errored(uid, http.StatusBadRequest, err.Error()))
		return
	}
	var b reviewpkg.Budget
	if h.Budget != nil {
		b = h.Budget(r.URL.Query().Get("timeout"))
	}
	resp := h.admit(r.Context(), b, review.Request)
	resp.UID = review.Request.UID
	write(w, version, http.StatusOK, resp)
}

// admit is Admit with a panic answered as an errored review that keeps the
// request's uid.
func (h Handler) admit(ctx context.Context, b reviewpkg.Budget, req *admissionv1.AdmissionRequest) (resp *admissionv1.AdmissionResponse) {
	defer httpx.Recovered(ctx, func(err error) {
		resp = Errored(string(req.UID), http.StatusInternalServerError, err.Error())
	})
	return h.Admit(ctx, b, req)
}

// Decode reads an AdmissionReview of either version. It returns the version
// to answer in (v1 when the body does not say a supported one).
func Decode(body []byte) (*admissionv1.AdmissionReview, string, error) {
	var review admissionv1.AdmissionReview
	if err := httpx.DecodeJSON(body, &review); err != nil {
		return nil, V1, fmt.Errorf("request is not a valid AdmissionReview: %v", err)
	}
	version := review.APIVersion
	if version != V1 && version != V1beta1 {
		return &review, V1, fmt.Errorf("apiVersion %q is not supported: send %s or %s", review.APIVersion, V1, V1beta1)
	}
	if review.Kind != "AdmissionReview" {
		return &review, version, fmt.Errorf("kind %q is not supported: send an AdmissionReview", review.Kind)
	}
	if review.Request == nil {
		return &review, version, fmt.Errorf("the AdmissionReview has no request")
	}
	if review.Request.UID == "" {
		return &review, version, fmt.Errorf("the request has no uid")
	}
	return &review, version, nil
}

// Allowed is an allowing response.
func Allowed() *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: true}
}

// Denied is a denying response with a 403 status and the message.
func Denied(message string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusForbidden, Reason: metav1.StatusReasonForbidden, Message: message,
	}}
}

// Errored is a denying response for a request that could not be judged.
func Errored(uid string, code int, message string) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{Result: &metav1.Status{Status: metav1.StatusFailure, Code: int32(code), Reason: httpx.Reason(code), Message: message}}
	resp.UID = types.UID(uid)
	return resp
}

func write(w http.ResponseWriter, version string, code int, resp *admissionv1.AdmissionResponse) {
	out := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: version, Kind: "AdmissionReview"},
		Response: resp,
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(out)
}
