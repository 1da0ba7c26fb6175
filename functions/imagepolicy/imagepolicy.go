// Package imagepolicy serves kube-apiserver's ImagePolicyWebhook admission
// plugin: it answers imagepolicy.k8s.io/v1alpha1 ImageReview requests.
package imagepolicy

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"k8s.io/api/imagepolicy/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/functions/internal/httpx"
	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/review"
)

// Path is where the handler is mounted.
const Path = "/imagepolicy"

var reviewType = metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "ImageReview"}

// Handler answers ImageReviews.
type Handler struct {
	reviewer *review.Reviewer
	observer observe.Observer
}

// Path is where the handler is mounted (see Path const).
func (h *Handler) Path() string { return Path }

// New returns a Handler that judges with rv and tells obs of every
// decision.
func New(rv *review.Reviewer, obs observe.Observer) *Handler {
	return &Handler{reviewer: rv, observer: obs}
}

// ServeHTTP decodes the review, asks the reviewer and encodes its decision.
// Requests it cannot read get a 4xx with a metav1.Status body, which the
// apiserver's client shows to the user.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, herr := httpx.ReadJSONPost(w, r, httpx.MaxImageReview)
	if herr != nil {
		httpx.WriteStatus(w, herr)
		return
	}
	var in v1alpha1.ImageReview
	if err := httpx.DecodeJSON(body, &in); err != nil {
		httpx.WriteStatus(w, httpx.Errorf(http.StatusBadRequest, "request is not a valid ImageReview: %v", err))
		return
	}
	if in.APIVersion != reviewType.APIVersion || in.Kind != reviewType.Kind {
		httpx.WriteStatus(w, httpx.Errorf(http.StatusBadRequest, "expected apiVersion %q and kind %q, got %q and %q",
			reviewType.APIVersion, reviewType.Kind, in.APIVersion, in.Kind))
		return
	}
	out, err := h.review(r.Context(), h.reviewer.BudgetFor(r.URL.Query().Get("timeout")), &in)
	if err != nil {
		httpx.WriteStatus(w, httpx.Errorf(http.StatusInternalServerError, "%v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // reasons read "nginx:<version>", not "\u003cversion\u003e"
	_ = enc.Encode(out)
}

// review is Review with a panic logged and returned as an error: the
// plugin gets a 500, retries, and then applies its defaultAllow.
func (h *Handler) review(ctx context.Context, b review.Budget, in *v1alpha1.ImageReview) (out *v1alpha1.ImageReview, err error) {
	defer httpx.Recovered(ctx, func(e error) { out, err = nil, e })
	return h.Review(ctx, b, in), nil
}

// Review judges one decoded ImageReview within b and returns the reply.
func (h *Handler) Review(ctx context.Context, b review.Budget, in *v1alpha1.ImageReview) *v1alpha1.ImageReview {
	req := policy.Request{Namespace: in.Spec.Namespace, Annotations: in.Spec.Annotations}
	rec := observe.Record{Handler: "imagepolicy", Kind: "Pod", Namespace: in.Spec.Namespace}
	for _, c := range in.Spec.Containers {
		rec.Images = append(rec.Images, c.Image)
		// The plugin sends containers and init containers in one list, or
		// only the ephemeral containers for that subresource, so the review
		// does not say where in the pod an image is: the reason names the
		// image alone rather than a field path that could mislead.
		req.Images = append(req.Images, policy.Image{Ref: c.Image})
	}
	start := time.Now()
	d := h.reviewer.Review(ctx, b, req)
	rec.Decision, rec.Duration = d, time.Since(start)
	h.observer.Decided(ctx, rec)
	return &v1alpha1.ImageReview{
		TypeMeta: reviewType,
		Status: v1alpha1.ImageReviewStatus{
			Allowed:          d.Allowed,
			Reason:           d.Reason(),
			AuditAnnotations: d.AuditAnnotations(),
		},
	}
}
