// Package admission is the AdmissionReview side shared by the validating
// and mutating handlers: decoding admission.k8s.io/v1 and v1beta1 reviews,
// answering in the version asked with the request's uid, and turning an
// AdmissionRequest into the facts the policy engine reads.
package admission

import (
	"encoding/json"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/admitfn/admitfn/functions/internal/httpx"
	"github.com/admitfn/admitfn/functions/observe"
	reviewpkg "github.com/admitfn/admitfn/functions/review"
	"github.com/admitfn/admitfn/functions/webhook"
)

// Versions this package answers.
const (
	V1      = "admission.k8s.io/v1"
	V1beta1 = "admission.k8s.io/v1beta1"
)

// Review is a decoded AdmissionReview: its request, and the version to
// answer in.
type Review struct {
	// Version is admission.k8s.io/v1 or v1beta1 (v1 when the body did
	// not say a supported one).
	Version string
	// Request is nil when the body held none.
	Request *admissionv1.AdmissionRequest
}

// uid is the request's uid, or "" when there is no request.
func (r Review) uid() string {
	if r.Request == nil {
		return ""
	}
	return string(r.Request.UID)
}

// Serve is an AdmissionReview endpoint: a's decisions behind the one
// handler every endpoint has (webhook.Handler), in this package's Codec.
func Serve(a webhook.Admitter[Review, *admissionv1.AdmissionResponse], rv *reviewpkg.Reviewer, obs observe.Observer) webhook.Endpoint {
	return webhook.Handler[Review, *admissionv1.AdmissionResponse](a, Codec{}, rv, obs)
}

// Record is what the observers are told of r by handler, before the
// handler adds its decision: which request it was.
func (r Review) Record(handler string) observe.Record {
	req := r.Request
	return observe.Record{
		Handler: handler, UID: string(req.UID), Kind: req.Kind.Kind, Namespace: req.Namespace, Name: req.Name,
		Operation: string(req.Operation), DryRun: req.DryRun != nil && *req.DryRun,
	}
}

// Codec is the AdmissionReview wire format (webhook.Codec): v1 and
// v1beta1, answered in the version asked, with the request's uid. Input
// it cannot use is answered with a well-formed review whose status
// carries the HTTP code and a message.
type Codec struct{}

// Limit is the largest AdmissionReview body accepted.
func (Codec) Limit() int64 { return httpx.MaxAdmissionReview }

// Decode reads a review (see Decode).
func (Codec) Decode(body []byte) (Review, *httpx.Error) {
	review, version, err := Decode(body)
	r := Review{Version: version}
	if review != nil {
		r.Request = review.Request
	}
	if err != nil {
		return r, httpx.Errorf(http.StatusBadRequest, "%v", err)
	}
	return r, nil
}

// Reply writes resp with the request's uid.
func (Codec) Reply(w http.ResponseWriter, r Review, resp *admissionv1.AdmissionResponse) {
	resp.UID = types.UID(r.uid())
	write(w, r.Version, http.StatusOK, resp)
}

// Refuse answers input that cannot be judged with e's status code.
func (Codec) Refuse(w http.ResponseWriter, r Review, e *httpx.Error) {
	version := r.Version
	if version == "" {
		version = V1
	}
	write(w, version, e.Code, Errored(r.uid(), e.Code, e.Message))
}

// Broken answers a review admitfn failed to judge as an errored review
// with status 200: a denial whatever the webhook's failurePolicy, since a
// defect must not let a request through where Ignore is set.
func (Codec) Broken(w http.ResponseWriter, r Review, err error) {
	write(w, r.Version, http.StatusOK, Errored(r.uid(), http.StatusInternalServerError, err.Error()))
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
