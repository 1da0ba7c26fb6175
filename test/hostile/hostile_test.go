// Package hostile sends malformed, oversized and adversarial reviews to the
// admission handlers: each must get a clear 4xx or a well-formed answer,
// never a panic or a 500.
package hostile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/api/imagepolicy/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/functions/imagepolicy"
	"github.com/admitfn/admitfn/functions/mutating"
	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/review"
	"github.com/admitfn/admitfn/functions/validating"
	"github.com/admitfn/admitfn/functions/webhook"
)

func server(t *testing.T) *httptest.Server {
	t.Helper()
	p, err := policy.Parse([]byte(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: hostile}
spec:
  mutation: {namespaces: ["*"], alwaysPullImages: true}
  rules:
  - name: no-latest
    tags: {denyLatest: true, denyUntagged: true}
  - name: node-restriction
    nodeRestriction: true
  - name: no-load-balancers
    serviceTypes: {deny: [LoadBalancer]}
`))
	if err != nil {
		t.Fatal(err)
	}
	return serveAll(t, review.New(p, nil))
}

// serveAll serves the three handlers, judging with rv, until the test
// ends.
func serveAll(t *testing.T, rv *review.Reviewer) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	for _, ep := range []webhook.Endpoint{imagepolicy.New(rv, observe.Observers{}), validating.New(rv, observe.Observers{}), mutating.New(rv, observe.Observers{})} {
		mux.Handle(ep.Path(), ep)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

var clientStatuses = map[int]bool{200: true, 400: true, 405: true, 413: true, 415: true}

// send posts body and checks the answer's shape; it returns the status and
// the decoded answer.
func send(t *testing.T, srv *httptest.Server, path string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := http.Post(srv.URL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("no answer (a panic closes the connection): %v", err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !clientStatuses[resp.StatusCode] {
		t.Fatalf("status %d, want 200 or a clear 4xx: %s", resp.StatusCode, out)
	}
	return resp.StatusCode, out
}

func checkImageReviewAnswer(t *testing.T, code int, out []byte) *v1alpha1.ImageReview {
	t.Helper()
	if code != http.StatusOK {
		var st metav1.Status
		if err := json.Unmarshal(out, &st); err != nil || st.Kind != "Status" || int(st.Code) != code {
			t.Fatalf("status %d body is not a matching metav1.Status: %v %s", code, err, out)
		}
		if st.Message == "" || strings.Contains(st.Message, "\n") {
			t.Errorf("message %q is not one clear line", st.Message)
		}
		return nil
	}
	var ir v1alpha1.ImageReview
	if err := json.Unmarshal(out, &ir); err != nil || ir.APIVersion != "imagepolicy.k8s.io/v1alpha1" || ir.Kind != "ImageReview" {
		t.Fatalf("200 body is not an ImageReview: %v %s", err, out)
	}
	return &ir
}

func checkAdmissionAnswer(t *testing.T, code int, in, out []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(out, &ar); err != nil || ar.Kind != "AdmissionReview" || ar.Response == nil {
		t.Fatalf("answer is not an AdmissionReview with a response: %v %s", err, out)
	}
	if code != http.StatusOK {
		if ar.Response.Allowed || ar.Response.Result == nil || int(ar.Response.Result.Code) != code {
			t.Fatalf("status %d answer does not deny with that code: %s", code, out)
		}
	}
	if r := ar.Response.Result; r != nil && (r.Message == "" || strings.Contains(r.Message, "\n")) && !ar.Response.Allowed {
		t.Errorf("message %q is not one clear line", r.Message)
	}
	var req struct {
		Request *struct {
			UID string `json:"uid"`
		} `json:"request"`
	}
	if json.Unmarshal(in, &req) == nil && req.Request != nil && ar.Response.UID != "" && string(ar.Response.UID) != req.Request.UID {
		t.Errorf("answer uid %q, request uid %q", ar.Response.UID, req.Request.UID)
	}
	return ar.Response
}

// mustDeny are corpus cases that carry a forbidden image in a well-formed
// review, or try to smuggle a decision in: they must be denied.
var mustDeny = map[string]bool{
	"imagereview/status-preset-allowed.json":   true,
	"imagereview/duplicate-keys.json":          true,
	"imagereview/image-empty.json":             true,
	"imagereview/image-null.json":              true,
	"imagereview/image-unicode.json":           true,
	"imagereview/image-path-traversal.json":    true,
	"imagereview/image-url.json":               true,
	"imagereview/image-uppercase.json":         true,
	"imagereview/container-null.json":          true,
	"admissionreview/response-preset.json":     true,
	"admissionreview/ephemeral-no-old.json":    true,
	"admissionreview/unknown-operation.json":   true,
	"admissionreview/image-invalid.json":       true,
	"admissionreview/image-unicode.json":       true,
	"admissionreview/update-old-garbage.json":  true,
	"admissionreview/update-old-null.json":     true,
	"admissionreview/node-groups-string.json":  true,
	"admissionreview/service-type-number.json": true,
	// Ways around a rule, each closed (see functions/policy/bypass_test.go).
	"imagereview/digest-sha1.json":                  true,
	"imagereview/host-trailing-dot.json":            true,
	"imagereview/case-variant-and-alias.json":       true,
	"admissionreview/image-volume-latest.json":      true,
	"admissionreview/knative-service-untagged.json": true,
	"admissionreview/knative-revision-latest.json":  true,
	"admissionreview/node-deletes-another.json":     true,
	"admissionreview/image-uppercase-path.json":     true,
}

func TestCorpus(t *testing.T) {
	srv := server(t)
	files, err := filepath.Glob("testdata/*/*.json")
	if err != nil || len(files) < 50 {
		t.Fatalf("corpus has %d cases, want at least 50: %v", len(files), err)
	}
	for _, f := range files {
		rel := strings.TrimPrefix(f, "testdata/")
		t.Run(rel, func(t *testing.T) {
			body, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(rel, "imagereview/") {
				code, out := send(t, srv, imagepolicy.Path, body)
				if ir := checkImageReviewAnswer(t, code, out); ir != nil && mustDeny[rel] && ir.Status.Allowed {
					t.Errorf("allowed: %s", out)
				}
				return
			}
			for _, path := range []string{validating.Path, mutating.Path} {
				code, out := send(t, srv, path, body)
				resp := checkAdmissionAnswer(t, code, body, out)
				if path == validating.Path && mustDeny[rel] && resp.Allowed {
					t.Errorf("%s allowed: %s", path, out)
				}
			}
		})
	}
}

// TestHugeInputs builds the large cases instead of storing them.
func TestHugeInputs(t *testing.T) {
	srv := server(t)
	containers := func(n int, image string) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"name":"c%d","image":%q}`, i, image)
		}
		return b.String()
	}
	pad := strings.Repeat("x", 3<<20)
	tests := []struct {
		name, path, body string
		code             int
		allowed          bool
	}{
		{"ImageReview over 3 MiB", imagepolicy.Path, `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"namespace":"` + pad + `"}}`, 413, false},
		{"AdmissionReview over 7 MiB", validating.Path, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","x":"` + strings.Repeat(pad, 3) + `"}}`, 413, false},
		// An UPDATE of an object near the apiserver's 3 MiB limit carries it
		// twice: it must be judged, not refused (which failurePolicy: Fail
		// would turn into a denied update).
		{"UPDATE of a 2.5 MiB object", validating.Path, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"ConfigMap"},"operation":"UPDATE",` +
			`"object":{"data":{"big":"` + pad[:5<<19] + `"}},"oldObject":{"data":{"big":"` + pad[:5<<19] + `"}}}}`, 200, true},
		{"ImageReview with 10,000 untagged containers", imagepolicy.Path, `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[` + containers(10000, "nginx") + `]}}`, 200, false},
		{"Pod with 10,000 tagged containers", validating.Path, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod"},"operation":"CREATE","object":{"spec":{"containers":[` + containers(10000, "nginx:1.27") + `]}}}}`, 200, true},
		{"Pod with 10,000 untagged containers", validating.Path, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod"},"operation":"CREATE","object":{"spec":{"containers":[` + containers(10000, "nginx") + `]}}}}`, 200, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := send(t, srv, tc.path, []byte(tc.body))
			if code != tc.code {
				t.Fatalf("status %d, want %d", code, tc.code)
			}
			allowed := false
			if tc.path == imagepolicy.Path {
				if ir := checkImageReviewAnswer(t, code, out); ir != nil {
					allowed = ir.Status.Allowed
					if len(ir.Status.Reason) > 4096 {
						t.Errorf("reason is %d bytes: the apiserver shows it to a person", len(ir.Status.Reason))
					}
				}
			} else {
				resp := checkAdmissionAnswer(t, code, []byte(tc.body), out)
				allowed = resp.Allowed
				if resp.Result != nil && len(resp.Result.Message) > 4096 {
					t.Errorf("message is %d bytes", len(resp.Result.Message))
				}
			}
			if allowed != tc.allowed {
				t.Errorf("allowed = %v, want %v", allowed, tc.allowed)
			}
		})
	}
}

// TestDecodesAsTheApiserver: a case variant of a field is not the field,
// and a field given twice is refused, as kube-apiserver decodes JSON. With
// encoding/json's rules the hidden ":latest" below would be read over by
// the allowed image.
func TestDecodesAsTheApiserver(t *testing.T) {
	srv := server(t)
	caseVariant := []byte(`{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"namespace":"default","containers":[{"image":"nginx:latest","Image":"nginx:1.17.1"}]}}`)
	code, out := send(t, srv, imagepolicy.Path, caseVariant)
	if ir := checkImageReviewAnswer(t, code, out); ir == nil || ir.Status.Allowed {
		t.Errorf("case variant: %d %s; want nginx:latest judged and denied", code, out)
	}
	duplicate := []byte(`{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"namespace":"default","containers":[{"image":"nginx:latest","image":"nginx:1.17.1"}]}}`)
	if code, out := send(t, srv, imagepolicy.Path, duplicate); code != http.StatusBadRequest || !strings.Contains(string(out), "duplicate field") {
		t.Errorf("duplicate field: %d %s; want 400 naming the duplicate", code, out)
	}
	review := func(object string) []byte {
		return []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"default","operation":"CREATE","userInfo":{"username":"x"},"object":` + object + `}}`)
	}
	body := review(`{"spec":{"containers":[{"name":"a","image":"nginx:latest","Image":"nginx:1.17.1"}]}}`)
	code, out = send(t, srv, validating.Path, body)
	if resp := checkAdmissionAnswer(t, code, body, out); resp == nil || resp.Allowed {
		t.Errorf("case variant in the object: %d %s; want nginx:latest judged and denied", code, out)
	}
	body = review(`{"spec":{"containers":[{"name":"a","image":"nginx:latest","image":"nginx:1.17.1"}]}}`)
	code, out = send(t, srv, validating.Path, body)
	if resp := checkAdmissionAnswer(t, code, body, out); resp == nil || resp.Allowed || !strings.Contains(resp.Result.Message, "duplicate field") {
		t.Errorf("duplicate field in the object: %d %s; want a denial naming the duplicate", code, out)
	}
}
