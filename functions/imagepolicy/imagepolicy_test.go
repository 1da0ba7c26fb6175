package imagepolicy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	"k8s.io/api/imagepolicy/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/functions/resolver"
	"github.com/admitfn/admitfn/functions/review"
)

func serve(t *testing.T, p *policy.Policy) *httptest.Server {
	t.Helper()
	res, err := resolver.New(p.Registry, resolver.WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, New(review.New(p, res), observe.Observers{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func reviewJSON(ns string, images ...string) string {
	in := v1alpha1.ImageReview{TypeMeta: reviewType, Spec: v1alpha1.ImageReviewSpec{Namespace: ns}}
	for _, img := range images {
		in.Spec.Containers = append(in.Spec.Containers, v1alpha1.ImageReviewContainerSpec{Image: img})
	}
	b, _ := json.Marshal(in)
	return string(b)
}

func post(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func decodeReviewFrom(t *testing.T, resp *http.Response) v1alpha1.ImageReview {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return decodeReview(t, b)
}

func decodeReview(t *testing.T, b []byte) v1alpha1.ImageReview {
	t.Helper()
	var out v1alpha1.ImageReview
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("reply is not an ImageReview: %v: %s", err, b)
	}
	if out.APIVersion != "imagepolicy.k8s.io/v1alpha1" || out.Kind != "ImageReview" {
		t.Errorf("reply type = %q %q, want imagepolicy.k8s.io/v1alpha1 ImageReview", out.APIVersion, out.Kind)
	}
	return out
}

func TestDefaultPolicyReviews(t *testing.T) {
	t.Parallel()
	srv := serve(t, policy.Default())
	tests := []struct {
		name       string
		images     []string
		allowed    bool
		reasonHas  []string
		violations string
	}{
		{"seed 001: nginx denied", []string{"nginx"}, false, []string{`"nginx"`, `"no-latest"`, `"latest"`, "nginx:<version>"}, "no-latest/enforce: nginx"},
		{"explicit latest denied", []string{"nginx:latest"}, false, []string{`"nginx:latest"`, `"no-latest"`}, "no-latest/enforce: nginx:latest"},
		{"seed 001: nginx:1.17.1 allowed", []string{"nginx:1.17.1"}, true, nil, ""},
		{"init container judged too", []string{"nginx:1.17.1", "busybox"}, false, []string{`image "busybox" violates rule "no-latest"`}, "no-latest/enforce: busybox"},
		{"empty image denied", []string{""}, false, []string{"image reference is empty"}, "image-reference/enforce: "},
		{"no containers allowed", nil, true, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(t, srv.URL+Path+"?timeout=30s", reviewJSON("default", tc.images...))
			if code != http.StatusOK {
				t.Fatalf("status %d: %s", code, body)
			}
			out := decodeReview(t, body)
			if out.Status.Allowed != tc.allowed {
				t.Errorf("allowed = %v, want %v (reason %q)", out.Status.Allowed, tc.allowed, out.Status.Reason)
			}
			for _, s := range tc.reasonHas {
				if !strings.Contains(out.Status.Reason, s) {
					t.Errorf("reason %q lacks %q", out.Status.Reason, s)
				}
			}
			if got := out.Status.AuditAnnotations["violations"]; got != tc.violations {
				t.Errorf("violations annotation = %q, want %q", got, tc.violations)
			}
			if out.Status.AuditAnnotations["policy"] != "default" {
				t.Errorf("audit annotations %v lack the policy name", out.Status.AuditAnnotations)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	srv := serve(t, policy.Default())
	huge := `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"namespace":"` + strings.Repeat("a", 3<<20) + `"}}`
	tests := []struct {
		name        string
		method      string
		contentType string
		body        string
		code        int
		message     string
	}{
		{"GET", http.MethodGet, "application/json", "", http.StatusMethodNotAllowed, "method GET is not allowed"},
		{"PUT", http.MethodPut, "application/json", reviewJSON("default", "nginx"), http.StatusMethodNotAllowed, "method PUT is not allowed"},
		{"no content type", http.MethodPost, "", reviewJSON("default", "nginx"), http.StatusUnsupportedMediaType, `content type "" is not supported`},
		{"text/plain", http.MethodPost, "text/plain", reviewJSON("default", "nginx"), http.StatusUnsupportedMediaType, `content type "text/plain" is not supported`},
		{"too large", http.MethodPost, "application/json", huge, http.StatusRequestEntityTooLarge, "exceeds the 3145728-byte limit"},
		{"empty body", http.MethodPost, "application/json", "", http.StatusBadRequest, "request body is empty"},
		{"malformed JSON", http.MethodPost, "application/json", `{"apiVersion":`, http.StatusBadRequest, "not a valid ImageReview"},
		{"wrong shape", http.MethodPost, "application/json", `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":"nginx"}}`, http.StatusBadRequest, "not a valid ImageReview"},
		{"wrong apiVersion", http.MethodPost, "application/json", `{"apiVersion":"imagepolicy.k8s.io/v1","kind":"ImageReview"}`, http.StatusBadRequest, `got "imagepolicy.k8s.io/v1" and "ImageReview"`},
		{"wrong kind", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest, `got "admission.k8s.io/v1" and "AdmissionReview"`},
		{"JSON array", http.MethodPost, "application/json", `[]`, http.StatusBadRequest, "not a valid ImageReview"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+Path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var st metav1.Status
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				t.Fatalf("status %d body is not a metav1.Status: %v", resp.StatusCode, err)
			}
			got := struct {
				Code     int
				BodyCode int32
				Kind     string
			}{resp.StatusCode, st.Code, st.Kind}
			want := struct {
				Code     int
				BodyCode int32
				Kind     string
			}{tc.code, int32(tc.code), "Status"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if !strings.Contains(st.Message, tc.message) || strings.Contains(st.Message, "\n") {
				t.Errorf("message %q, want one line containing %q", st.Message, tc.message)
			}
		})
	}
}

func resolvablePolicy(t *testing.T, host string, onError string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(fmt.Sprintf(`
apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: [%q], timeout: 5s}
  rules:
  - name: resolvable
    images: ["%s/**"]
    onRegistryError: %s
    resolvable: true
`, host, host, onError)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestResolvableTags(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	digest := reg.Push("app:v1", registrytest.Image(t, nil))
	srv := serve(t, resolvablePolicy(t, reg.Host(), "deny"))

	_, body := post(t, srv.URL+Path, reviewJSON("default", reg.Ref("app", ":v1")))
	out := decodeReview(t, body)
	if !out.Status.Allowed {
		t.Errorf("present tag denied: %q", out.Status.Reason)
	}
	var digests map[string]string
	if err := json.Unmarshal([]byte(out.Status.AuditAnnotations["digests"]), &digests); err != nil || digests[reg.Ref("app", ":v1")] != digest {
		t.Errorf("digests annotation = %q, want %s", out.Status.AuditAnnotations["digests"], digest)
	}

	_, body = post(t, srv.URL+Path, reviewJSON("default", reg.Ref("app", ":v2")))
	out = decodeReview(t, body)
	if out.Status.Allowed || !strings.Contains(out.Status.Reason, `tag "v2" was not found in `+reg.Host()+"/app") {
		t.Errorf("missing tag: allowed=%v reason=%q, want a denial saying the tag was not found", out.Status.Allowed, out.Status.Reason)
	}
}

func TestDeadlineFromApiserverTimeout(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	reg.SetFault(registrytest.Hang)
	// The apiserver's 3s leaves admitfn 2.4s for the registry (the
	// policy allows 5s) and 0.6s for the answer to travel: a margin a
	// loaded CI machine keeps (with 1s, 0.2s was once not enough under
	// -race).
	const deadline = 3 * time.Second
	for _, onError := range []string{"deny", "allow"} {
		t.Run(onError, func(t *testing.T) {
			t.Parallel()
			srv := serve(t, resolvablePolicy(t, reg.Host(), onError))
			start := time.Now()
			_, body := post(t, srv.URL+Path+"?timeout=3s", reviewJSON("default", reg.Ref("app", ":"+onError)))
			took := time.Since(start)
			t.Logf("answered in %v", took)
			out := decodeReview(t, body)
			if took >= deadline {
				t.Errorf("review took %v, not answered before the apiserver's %v timeout", took, deadline)
			}
			if out.Status.Allowed != (onError == "allow") {
				t.Errorf("allowed = %v with onRegistryError %s; reason %q", out.Status.Allowed, onError, out.Status.Reason)
			}
			if onError == "deny" && !strings.Contains(out.Status.Reason, "did not answer before the review deadline") {
				t.Errorf("reason %q does not say the registry timed out", out.Status.Reason)
			}
			if onError == "allow" && !strings.Contains(out.Status.AuditAnnotations["failed-open"], "resolvable") {
				t.Errorf("audit annotations %v do not record the fail-open", out.Status.AuditAnnotations)
			}
		})
	}
}

// TestConcurrentImageReviews sends 1000 concurrent ImageReviews of one
// uncached tag over HTTP and counts the registry's manifest requests.
func TestConcurrentImageReviews(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	reg.Push("hot:v1", registrytest.Image(t, nil))
	srv := serve(t, resolvablePolicy(t, reg.Host(), "deny"))
	reg.ResetCounts()
	body := reviewJSON("default", reg.Ref("hot", ":v1"))
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 64, MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	start := make(chan struct{})
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := client.Post(srv.URL+Path, "application/json", bytes.NewReader([]byte(body)))
			if err != nil {
				mu.Lock()
				failures = append(failures, err.Error())
				mu.Unlock()
				return
			}
			defer resp.Body.Close()
			var out v1alpha1.ImageReview
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || !out.Status.Allowed {
				mu.Lock()
				failures = append(failures, fmt.Sprintf("status %d allowed %v err %v", resp.StatusCode, out.Status.Allowed, err))
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of 1000 reviews failed, first: %s", len(failures), failures[0])
	}
	if got := reg.ManifestRequests(); got != 1 {
		t.Errorf("registry saw %d manifest requests for 1000 concurrent reviews, want 1", got)
	}
}

// panicking fails the way a defect would.
type panicking struct{}

func (panicking) Resolve(context.Context, imageref.Ref, policy.Level) policy.Facts {
	panic("resolver defect")
}
func (panicking) Decided(context.Context, observe.Record) { panic("observer defect") }

// TestPanicsAnswerTheReview: a defect answers the review — a lookup's as a
// registry failure the rule decides, the handler's own as a 500 (the
// plugin then retries and applies defaultAllow) — and the server lives on.
func TestPanicsAnswerTheReview(t *testing.T) {
	p, err := policy.Parse([]byte("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  rules:\n  - {name: resolvable, resolvable: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		h    http.Handler
		code int
		want string
	}{
		{"in a lookup", New(review.New(p, panicking{}), observe.Observers{}), http.StatusOK, "internal error (resolver defect)"},
		{"in the handler", New(review.New(p, nil), panicking{}), http.StatusInternalServerError, "internal error (observer defect)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.h)
			defer srv.Close()
			for range 2 { // the second answer shows the server survived
				resp, err := http.Post(srv.URL, "application/json", strings.NewReader(reviewJSON("default", "registry.example/app:1")))
				if err != nil {
					t.Fatalf("no answer: %v", err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.want) {
					t.Errorf("%d %s, want %d containing %q", resp.StatusCode, body, tc.code, tc.want)
				}
			}
		})
	}
}
