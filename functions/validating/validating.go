// Package validating serves ValidatingWebhookConfiguration requests
// (admission.k8s.io/v1 and v1beta1 AdmissionReviews) with the image policy,
// the node restriction rule and the Service type rule.
package validating

import (
	"context"
	"net/http"
	"time"
	"unicode/utf8"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/admitfn/admitfn/functions/admission"
	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/review"
)

// Path is where the handler is mounted.
const Path = "/validate"

// maxWarning bounds one warning: clients print them line by line, and the
// apiserver may truncate long ones.
const maxWarning = 240

// New returns the handler, judging with rv and telling obs of every
// decision.
func New(rv *review.Reviewer, obs observe.Observer) admission.Handler {
	return admission.Handler{
		Route: Path,
		Admit: func(ctx context.Context, b review.Budget, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
			return Admit(ctx, b, rv, obs, req)
		},
		Budget: rv.BudgetFor,
	}
}

// Admit decides one request: decode, ask the reviewer, encode.
func Admit(ctx context.Context, b review.Budget, rv *review.Reviewer, obs observe.Observer, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	// One policy decodes and judges the request, whatever a reload does
	// meanwhile.
	snap := rv.Snapshot()
	facts, err := admission.Read(req, snap.Policy().Workloads)
	if err != nil {
		return admission.Errored(string(req.UID), http.StatusBadRequest, err.Error())
	}
	start := time.Now()
	d := snap.Review(ctx, b, facts.Request)
	rec := observe.Record{
		Handler: "validating", UID: string(req.UID), Kind: req.Kind.Kind, Namespace: req.Namespace, Name: req.Name,
		Operation: string(req.Operation), DryRun: req.DryRun != nil && *req.DryRun, Decision: d, Duration: time.Since(start),
	}
	for _, img := range facts.Request.Images {
		rec.Images = append(rec.Images, img.Ref)
	}
	obs.Decided(ctx, rec)
	resp := admission.Allowed()
	if !d.Allowed {
		resp = admission.Denied(d.Reason())
	}
	for _, w := range d.Warnings() {
		resp.Warnings = append(resp.Warnings, shorten(w, maxWarning))
	}
	resp.AuditAnnotations = d.AuditAnnotations()
	return resp
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
