// Package validating serves ValidatingWebhookConfiguration requests
// (admission.k8s.io/v1 and v1beta1 AdmissionReviews) with the image policy,
// the node restriction rule and the Service type rule.
package validating

import (
	"context"
	"net/http"
	"unicode/utf8"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/admitfn/admitfn/functions/admission"
	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/review"
	"github.com/admitfn/admitfn/functions/webhook"
)

// Path is where the handler is mounted.
const Path = "/validate"

// maxWarning bounds one warning: clients print them line by line, and the
// apiserver may truncate long ones.
const maxWarning = 240

// New returns the handler, judging with rv's policy and telling obs of
// every decision.
func New(rv *review.Reviewer, obs observe.Observer) webhook.Endpoint {
	return admission.Serve(Admitter{}, rv, obs)
}

// Admitter decides AdmissionReviews for the validating webhook.
type Admitter struct{}

// Path is where the handler is mounted.
func (Admitter) Path() string { return Path }

// Admit decides one request by the snapshot's policy: decode, ask the
// engine, encode.
func (Admitter) Admit(ctx context.Context, s review.Snapshot, b review.Budget, r admission.Review) (*admissionv1.AdmissionResponse, observe.Record) {
	req := r.Request
	facts, err := admission.Read(req, s.Policy().Workloads)
	if err != nil {
		return admission.Errored(string(req.UID), http.StatusBadRequest, err.Error()), observe.Record{}
	}
	d := s.Review(ctx, b, facts.Request)
	rec := r.Record("validating")
	rec.Decision = d
	for _, img := range facts.Request.Images {
		rec.Images = append(rec.Images, img.Ref)
	}
	resp := admission.Allowed()
	if !d.Allowed {
		resp = admission.Denied(d.Reason())
	}
	for _, w := range d.Warnings() {
		resp.Warnings = append(resp.Warnings, shorten(w, maxWarning))
	}
	resp.AuditAnnotations = d.AuditAnnotations()
	return resp, rec
}

// shorten cuts s to at most max bytes, "..." included, at a character
// boundary: a warning cut inside a UTF-8 sequence is not valid text, and
// clients print the broken sequence as garbage.
func shorten(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
