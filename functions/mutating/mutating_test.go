package mutating

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/admitfn/admitfn/functions/admission"
	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/functions/resolver"
	"github.com/admitfn/admitfn/functions/review"
)

func newReviewer(t *testing.T, reg *registrytest.Registry, mutation string) *review.Reviewer {
	t.Helper()
	p, err := policy.Parse([]byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: [%q]}
  mutation: %s
  rules:
  - name: no-latest
    tags: {denyLatest: true}
`, reg.Host(), mutation)))
	if err != nil {
		t.Fatal(err)
	}
	res, err := resolver.New(p.Registry, resolver.WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		t.Fatal(err)
	}
	return review.New(p, res)
}

// mutate runs Admit on a Deployment and returns the patched object's
// containers (init then app) and the response.
func mutate(t *testing.T, rv *review.Reviewer, ns string, containers ...corev1.Container) ([]corev1.Container, *admissionv1.AdmissionResponse) {
	t.Helper()
	d := appsv1.Deployment{}
	d.Spec.Template.Spec.InitContainers = containers[:1]
	d.Spec.Template.Spec.Containers = containers[1:]
	raw, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	resp := admit(rv, &admissionv1.AdmissionRequest{UID: "u", Kind: metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"},
		Operation: admissionv1.Create, Namespace: ns, Name: "web", Object: runtime.RawExtension{Raw: raw}})
	if !resp.Allowed {
		t.Fatalf("mutating handler denied: %+v", resp.Result)
	}
	if resp.Patch == nil {
		return containers, resp
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("patch is not a JSON patch: %v: %s", err, resp.Patch)
	}
	patched, err := patch.Apply(raw)
	if err != nil {
		t.Fatalf("patch does not apply: %v: %s", err, resp.Patch)
	}
	var out appsv1.Deployment
	if err := json.Unmarshal(patched, &out); err != nil {
		t.Fatal(err)
	}
	return append(out.Spec.Template.Spec.InitContainers, out.Spec.Template.Spec.Containers...), resp
}

func images(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Image+" "+string(c.ImagePullPolicy))
	}
	return out
}

func TestPinDigests(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	app := reg.Ref("app", ":v1")
	digest := reg.Push("app:v1", registrytest.Image(t, nil))
	sidecar := reg.Ref("sidecar", "")
	sideDigest := reg.Push("sidecar:latest", registrytest.Image(t, nil))
	pinned := reg.Ref("app", "@"+digest)
	missing := reg.Ref("app", ":gone")

	tests := []struct {
		name     string
		mutation string
		ns       string
		in       []string
		want     []string
		warning  string
	}{
		{"tag and digest", "{namespaces: [team-*], pinDigests: true}", "team-a",
			[]string{sidecar, app}, []string{sidecar + "@" + sideDigest + " ", app + "@" + digest + " "}, ""},
		{"digest form drops the tag", "{namespaces: [team-*], pinDigests: true, pinForm: digest}", "team-a",
			[]string{sidecar, app}, []string{sidecar + "@" + sideDigest + " ", reg.Ref("app", "@"+digest) + " "}, ""},
		{"digested reference left alone", "{namespaces: [team-*], pinDigests: true}", "team-a",
			[]string{pinned, app}, []string{pinned + " ", app + "@" + digest + " "}, ""},
		{"namespace not opted in", "{namespaces: [team-*], pinDigests: true}", "default",
			[]string{sidecar, app}, []string{sidecar + " ", app + " "}, ""},
		{"unresolvable tag left alone with a warning", "{namespaces: [team-*], pinDigests: true}", "team-a",
			[]string{pinned, missing}, []string{pinned + " ", missing + " "}, "admitfn could not pin " + missing},
		{"always pull", "{namespaces: [team-*], alwaysPullImages: true}", "team-a",
			[]string{sidecar, app}, []string{sidecar + " Always", app + " Always"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rv := newReviewer(t, reg, tc.mutation)
			var cs []corev1.Container
			for i, img := range tc.in {
				c := corev1.Container{Name: fmt.Sprint("c", i), Image: img}
				if i == 1 {
					c.ImagePullPolicy = corev1.PullIfNotPresent
				}
				cs = append(cs, c)
			}
			got, resp := mutate(t, rv, tc.ns, cs...)
			want := tc.want
			if !strings.Contains(tc.mutation, "alwaysPull") {
				want = []string{tc.want[0], tc.want[1] + "IfNotPresent"}
			}
			if diff := cmp.Diff(want, images(got)); diff != "" {
				t.Errorf("images (-want +got):\n%s\npatch: %s", diff, resp.Patch)
			}
			if w := strings.Join(resp.Warnings, "\n"); !strings.Contains(w, tc.warning) || (tc.warning == "" && w != "") {
				t.Errorf("warnings %q, want %q", w, tc.warning)
			}
			// Pinning twice changes nothing: the result is a fixed point.
			again, resp2 := mutate(t, rv, tc.ns, got...)
			if diff := cmp.Diff(images(got), images(again)); diff != "" || (resp2.Patch != nil && tc.warning == "") {
				t.Errorf("second pass changed the object (-first +second):\n%s\npatch: %s", diff, resp2.Patch)
			}
		})
	}
}

// TestNoLookupForImagesDeniedByName: the validating webhook will deny
// ":latest" by its name, so the mutating handler neither pins nor looks
// it up.
func TestNoLookupForImagesDeniedByName(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	latest := reg.Ref("app", ":latest")
	reg.Push("app:latest", registrytest.Image(t, nil))
	app := reg.Ref("app", ":v1")
	digest := reg.Push("app:v1", registrytest.Image(t, nil))
	rv := newReviewer(t, reg, "{namespaces: [team-*], pinDigests: true}")
	reg.ResetCounts()
	got, resp := mutate(t, rv, "team-a", corev1.Container{Name: "init", Image: latest}, corev1.Container{Name: "app", Image: app})
	if diff := cmp.Diff([]string{latest + " ", app + "@" + digest + " "}, images(got)); diff != "" {
		t.Errorf("images (-want +got):\n%s\npatch: %s", diff, resp.Patch)
	}
	if n := reg.ManifestRequests(); n != 1 {
		t.Errorf("manifest requests = %d, want 1 (app:v1 only)", n)
	}
}

// admit computes the patch for req with rv's policy, as the handler does
// once it has decoded the review.
func admit(rv *review.Reviewer, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp, _ := Admitter{}.Admit(context.Background(), rv.Snapshot(), review.Budget{}, admission.Review{Version: admission.V1, Request: req})
	return resp
}

// recorder keeps what it is told.
type recorder struct {
	mu      sync.Mutex
	records []observe.Record
}

func (r *recorder) Decided(_ context.Context, rec observe.Record) {
	r.mu.Lock()
	r.records = append(r.records, rec)
	r.mu.Unlock()
}

// TestMutationsAreObserved: the mutating handler tells its observers of
// each answer, through the same webhook.Handler as the others: patched
// where the policy mutates, unchanged where it does not.
func TestMutationsAreObserved(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	reg.Push("app:v1", registrytest.Image(t, nil))
	rv := newReviewer(t, reg, `{namespaces: [team-*], pinDigests: true}`)
	obs := &recorder{}
	srv := httptest.NewServer(New(rv, obs))
	defer srv.Close()
	for _, ns := range []string{"team-a", "kube-system"} {
		d := appsv1.Deployment{}
		d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "app", Image: reg.Ref("app", ":v1")}}
		object, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		body, err := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request: &admissionv1.AdmissionRequest{UID: types.UID("u-" + ns), Kind: metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"},
				Operation: admissionv1.Create, Namespace: ns, Name: "web", Object: runtime.RawExtension{Raw: object}},
		})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post(srv.URL+Path, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	type seen struct{ Handler, UID, Namespace, Result string }
	var got []seen
	for _, r := range obs.records {
		got = append(got, seen{r.Handler, r.UID, r.Namespace, r.Result()})
	}
	want := []seen{{"mutating", "u-team-a", "team-a", "patched"}, {"mutating", "u-kube-system", "kube-system", "unchanged"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
}
