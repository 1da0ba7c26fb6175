// Package mutating serves MutatingWebhookConfiguration requests: in the
// namespaces the policy opts in, it pins each image to the digest the
// registry resolves its tag to, and can set imagePullPolicy: Always.
package mutating

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/admitfn/admitfn/functions/admission"
	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/review"
	"github.com/admitfn/admitfn/functions/webhook"
	"github.com/admitfn/admitfn/functions/workload"
)

// Path is where the handler is mounted.
const Path = "/mutate"

// New returns the handler; rv supplies the policy and the resolver, obs
// is told of each answer (patched or unchanged).
func New(rv *review.Reviewer, obs observe.Observer) webhook.Endpoint {
	return admission.Serve(Admitter{}, rv, obs)
}

// Admitter computes patches for the mutating webhook.
type Admitter struct{}

// Path is where the handler is mounted.
func (Admitter) Path() string { return Path }

// Admit computes the patch for one request (see patch) and the record of
// it.
func (Admitter) Admit(ctx context.Context, s review.Snapshot, b review.Budget, r admission.Review) (*admissionv1.AdmissionResponse, observe.Record) {
	req := r.Request
	resp, images := patch(ctx, s, b, req)
	if resp.Result != nil {
		return resp, observe.Record{} // the request could not be read
	}
	rec := r.Record("mutating")
	rec.Images, rec.Decision, rec.Mutation = images, policy.Decision{Allowed: true, Policy: s.Policy().Name}, "unchanged"
	if resp.Patch != nil {
		rec.Mutation = "patched"
	}
	return resp, rec
}

// patchOp is one RFC 6902 operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value string `json:"value"`
}

// patch computes the patch for one request and returns the images it
// read. It never denies on policy grounds: that is the validating
// handler's job, and it runs after this one on the pinned references, so
// the digest pinned is the digest judged. An image whose digest cannot be
// resolved is left as written, with a warning. The snapshot's one policy
// decodes the request and decides the patch.
func patch(ctx context.Context, snap review.Snapshot, b review.Budget, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, []string) {
	p := snap.Policy()
	resp := admission.Allowed()
	if !p.MutatesIn(req.Namespace) {
		return resp, nil
	}
	facts, err := admission.Read(req, p.Workloads)
	if err != nil {
		return admission.Errored(string(req.UID), http.StatusBadRequest, err.Error()), nil
	}
	var images []string
	for _, img := range facts.Images {
		images = append(images, img.Ref)
	}
	m := p.Mutation
	var ops []patchOp
	if m.PinDigests {
		need := map[string]policy.Level{}
		for _, img := range facts.Images {
			// An image the validating webhook will deny by its name is
			// not worth a registry call (nor one a reference can aim).
			if ref, err := imageref.Parse(img.Ref); err == nil && ref.Digest == "" && !p.DeniedByName(facts.Request, ref) {
				need[img.Ref] = policy.LevelDigest
			}
		}
		resolved := snap.Facts(ctx, b, facts.Request, need)
		pinned := map[string]string{}
		for _, img := range facts.Images {
			f, ok := resolved[img.Ref]
			if !ok {
				continue // already pinned, or not a reference the engine can read
			}
			if f.Digest == "" {
				why := "not found in its registry"
				if f.Err != nil {
					why = f.Err.Error()
				}
				resp.Warnings = append(resp.Warnings, fmt.Sprintf("admitfn could not pin %s (%s): %s", img.Ref, img.Field, why))
				continue
			}
			ref := pin(img.Ref, f.Digest, m.PinForm)
			ops = append(ops, patchOp{Op: "replace", Path: img.Pointer, Value: ref})
			pinned[img.Ref] = ref
		}
		if len(pinned) > 0 {
			b, _ := json.Marshal(pinned)
			resp.AuditAnnotations = map[string]string{"pinned": string(b)}
		}
	}
	if m.AlwaysPullImages {
		ops = append(ops, alwaysPull(facts.Images)...)
	}
	if len(ops) > 0 {
		patch, err := json.Marshal(ops)
		if err != nil {
			return admission.Errored(string(req.UID), http.StatusInternalServerError, "encoding the patch: "+err.Error()), images
		}
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
	}
	return resp, images
}

// pin writes ref with the digest, keeping the tag for tagAndDigest.
func pin(ref, digest string, form policy.PinForm) string {
	if form == policy.PinDigest {
		slash := strings.LastIndex(ref, "/")
		if colon := strings.LastIndex(ref, ":"); colon > slash {
			ref = ref[:colon]
		}
	}
	return ref + "@" + digest
}

func alwaysPull(images []workload.Image) []patchOp {
	var ops []patchOp
	for _, img := range images {
		switch {
		case !img.HasPullPolicy:
			ops = append(ops, patchOp{Op: "add", Path: img.PullPolicyPointer, Value: "Always"})
		case img.PullPolicy != "Always":
			ops = append(ops, patchOp{Op: "replace", Path: img.PullPolicyPointer, Value: "Always"})
		}
	}
	return ops
}
