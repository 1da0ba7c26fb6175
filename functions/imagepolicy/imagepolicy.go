// Package imagepolicy serves kube-apiserver's ImagePolicyWebhook admission
// plugin: it answers imagepolicy.k8s.io/v1alpha1 ImageReview requests.
package imagepolicy

import (
	"context"
	"encoding/json"
	"net/http"

	"k8s.io/api/imagepolicy/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/functions/internal/httpx"
	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/review"
	"github.com/admitfn/admitfn/functions/webhook"
)

// Path is where the handler is mounted.
const Path = "/imagepolicy"

var reviewType = metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "ImageReview"}

// New returns the handler, judging with rv's policy and telling obs of
// every decision.
func New(rv *review.Reviewer, obs observe.Observer) webhook.Endpoint {
	return webhook.Handler[*v1alpha1.ImageReview, *v1alpha1.ImageReview](Admitter{}, Codec{}, rv, obs)
}

// Codec is the ImageReview wire format (webhook.Codec). Requests it
// cannot read get a 4xx with a metav1.Status body, which the apiserver's
// client shows to the user; a review it failed to judge gets a 500, which
// the plugin retries and then decides by its defaultAllow.
type Codec struct{}

// Limit is the largest ImageReview body accepted.
func (Codec) Limit() int64 { return httpx.MaxImageReview }

// Decode reads an imagepolicy.k8s.io/v1alpha1 ImageReview.
func (Codec) Decode(body []byte) (*v1alpha1.ImageReview, *httpx.Error) {
	var in v1alpha1.ImageReview
	if err := httpx.DecodeJSON(body, &in); err != nil {
		return nil, httpx.Errorf(http.StatusBadRequest, "request is not a valid ImageReview: %v", err)
	}
	if in.APIVersion != reviewType.APIVersion || in.Kind != reviewType.Kind {
		return nil, httpx.Errorf(http.StatusBadRequest, "expected apiVersion %q and kind %q, got %q and %q",
			reviewType.APIVersion, reviewType.Kind, in.APIVersion, in.Kind)
	}
	return &in, nil
}

// Reply writes the answer.
func (Codec) Reply(w http.ResponseWriter, _ *v1alpha1.ImageReview, out *v1alpha1.ImageReview) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // reasons read "nginx:<version>", not "\u003cversion\u003e"
	_ = enc.Encode(out)
}

// Refuse answers a request that cannot be judged.
func (Codec) Refuse(w http.ResponseWriter, _ *v1alpha1.ImageReview, e *httpx.Error) {
	httpx.WriteStatus(w, e)
}

// Broken answers a review admitfn failed to judge.
func (Codec) Broken(w http.ResponseWriter, _ *v1alpha1.ImageReview, err error) {
	httpx.WriteStatus(w, httpx.Errorf(http.StatusInternalServerError, "%v", err))
}

// Admitter judges ImageReviews.
type Admitter struct{}

// Path is where the handler is mounted.
func (Admitter) Path() string { return Path }

// Admit judges one decoded ImageReview by the snapshot's policy within b.
func (Admitter) Admit(ctx context.Context, s review.Snapshot, b review.Budget, in *v1alpha1.ImageReview) (*v1alpha1.ImageReview, observe.Record) {
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
	d := s.Review(ctx, b, req)
	rec.Decision = d
	return &v1alpha1.ImageReview{
		TypeMeta: reviewType,
		Status: v1alpha1.ImageReviewStatus{
			Allowed:          d.Allowed,
			Reason:           d.Reason(),
			AuditAnnotations: d.AuditAnnotations(),
		},
	}, rec
}
