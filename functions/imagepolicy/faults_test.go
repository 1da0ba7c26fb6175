package imagepolicy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.uber.org/goleak"

	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/functions/resolver"
	"github.com/admitfn/admitfn/functions/review"
)

// TestRegistryFaults breaks the registry in every way a review may meet and
// checks that the answer comes before the apiserver's deadline, follows the
// rule's onRegistryError, and says what failed; that a stale answer stands
// in within the stale window; and that nothing is left running.
func TestRegistryFaults(t *testing.T) {
	// Checked once every case has ended (they run in parallel: a
	// deferred check would run before them).
	running := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, running) })
	// The apiserver's ?timeout=3s: 2.4s for the registry (the policy
	// allows 5s, so the review's deadline comes first), and a margin a
	// loaded CI machine keeps.
	const deadline = 3 * time.Second
	tests := []struct {
		name   string
		fault  registrytest.Fault
		reason string // what the fail-closed reason must say
		// verdict: whoever pushed the image could cause it, so it is
		// refused whatever onRegistryError says.
		verdict bool
	}{
		{"down", -1, "could not be asked: refused the connection", false},
		{"hangs", registrytest.Hang, "did not answer before the review deadline", false},
		{"500", registrytest.ServerError, "500", false},
		{"429 with Retry-After", registrytest.TooManyRequests, "429", false},
		{"garbage manifest", registrytest.GarbageManifest, "cannot be judged: the registry served a manifest or config that is not valid JSON", true},
		{"slower than the deadline", registrytest.Slow, "did not answer before the review deadline", false},
	}
	for _, tc := range tests {
		for _, onError := range []string{"deny", "allow"} {
			t.Run(tc.name+"/"+onError, func(t *testing.T) {
				t.Parallel()
				reg := registrytest.New(t)
				reg.Push("app:v1", registrytest.Image(t, nil))
				url, stop := nonRootServer(t, reg.Host(), "timeout: 5s, cacheTTL: 1ms, staleWindow: 0s", onError)
				defer stop()
				switch tc.fault {
				case -1:
					reg.Stop()
				case registrytest.Slow:
					reg.SetDelay(5 * time.Second)
					reg.SetFault(tc.fault)
				default:
					reg.SetFault(tc.fault)
				}
				start := time.Now()
				resp, err := http.Post(url+"?timeout=3s", "application/json", strings.NewReader(reviewJSON("default", reg.Ref("app", ":v1"))))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				took := time.Since(start)
				out := decodeReviewFrom(t, resp)
				if took >= deadline {
					t.Errorf("answered after %v, past the apiserver's %v deadline", took, deadline)
				}
				t.Logf("reason: %s", out.Status.Reason)
				switch {
				case onError == "deny" || tc.verdict:
					if out.Status.Allowed || !strings.Contains(out.Status.Reason, tc.reason) || !strings.Contains(out.Status.Reason, `rule "non-root"`) {
						t.Errorf("allowed=%v reason %q; want a denial by non-root saying %q", out.Status.Allowed, out.Status.Reason, tc.reason)
					}
				default:
					if !out.Status.Allowed || !strings.Contains(out.Status.AuditAnnotations["failed-open"], "non-root") {
						t.Errorf("allowed=%v annotations %v; want allowed and audited as failed-open", out.Status.Allowed, out.Status.AuditAnnotations)
					}
				}
				reg.Stop() // ends held requests before the leak check
			})
		}
	}
}

// TestStaleAnswerWithinWindow warms the cache, lets the entry expire and
// breaks the registry: the review is judged on the stale facts and says so.
func TestStaleAnswerWithinWindow(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	reg := registrytest.New(t)
	reg.Push("root:v1", registrytest.Image(t, func(cf *v1.ConfigFile) { cf.Config.User = "" }))
	url, stop := nonRootServer(t, reg.Host(), "timeout: 2s, cacheTTL: 1ms, staleWindow: 1h", "deny")
	defer stop()
	ask := func() (bool, string, map[string]string) {
		resp, err := http.Post(url+"?timeout=1s", "application/json", strings.NewReader(reviewJSON("default", reg.Ref("root", ":v1"))))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out := decodeReviewFrom(t, resp)
		return out.Status.Allowed, out.Status.Reason, out.Status.AuditAnnotations
	}
	if allowed, reason, _ := ask(); allowed || !strings.Contains(reason, "runs as root") {
		t.Fatalf("warm-up: allowed=%v reason %q", allowed, reason)
	}
	time.Sleep(5 * time.Millisecond) // past the 1ms TTL
	reg.SetFault(registrytest.ServerError)
	allowed, reason, annotations := ask()
	if allowed || !strings.Contains(reason, "runs as root") {
		t.Errorf("with the registry failing: allowed=%v reason %q; want the stale facts to judge", allowed, reason)
	}
	if annotations["stale"] != reg.Ref("root", ":v1") {
		t.Errorf("audit annotations %v do not mark the stale image", annotations)
	}
	reg.Stop()
}

// nonRootServer serves ImageReviews judged by one nonRoot rule against the
// registry at host, with the given registry settings; stop closes the
// server and the resolver's connections (before a goroutine leak check).
// nonRootServer serves ImageReviews with a policy whose one rule, non-root,
// needs image configs; onError is its onRegistryError, and extra more of
// its fields (YAML lines, indented four spaces).
func nonRootServer(t *testing.T, host, registry, onError string, extra ...string) (url string, stop func()) {
	t.Helper()
	p, err := policy.Parse([]byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: [%q], %s}
  rules:
  - name: non-root
    onRegistryError: %s
    nonRoot: true
%s`, host, registry, onError, strings.Join(extra, ""))))
	if err != nil {
		t.Fatal(err)
	}
	res, err := resolver.New(p.Registry, resolver.WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(review.New(p, res), observe.Observers{}))
	return srv.URL, func() { srv.Close(); res.Close() }
}

// TestRegistryRefusesAdmitfn: a 401 or 403 is the registry refusing
// admitfn, not failing; onRegistryError: allow does not let it through
// (the pod's author could pick a private repository to fail open), only
// onRegistryUnauthorized: allow does.
func TestRegistryRefusesAdmitfn(t *testing.T) {
	for _, fault := range []registrytest.Fault{registrytest.Unauthorized, registrytest.Forbidden} {
		for _, tc := range []struct {
			name    string
			extra   string
			allowed bool
		}{
			{"onRegistryError allow", "", false},
			{"onRegistryUnauthorized allow", "    onRegistryUnauthorized: allow\n", true},
		} {
			t.Run(fmt.Sprintf("%d/%s", 401+2*int(fault-registrytest.Unauthorized), tc.name), func(t *testing.T) {
				reg := registrytest.New(t)
				reg.Push("app:v1", registrytest.Image(t, nil))
				url, stop := nonRootServer(t, reg.Host(), "cacheTTL: 1ms, staleWindow: 0s", "allow", tc.extra)
				defer stop()
				reg.SetFault(fault)
				resp, err := http.Post(url, "application/json", strings.NewReader(reviewJSON("default", reg.Ref("app", ":v1"))))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				out := decodeReviewFrom(t, resp)
				t.Logf("allowed=%v reason: %s; annotations %v", out.Status.Allowed, out.Status.Reason, out.Status.AuditAnnotations)
				if out.Status.Allowed != tc.allowed {
					t.Fatalf("allowed=%v, want %v", out.Status.Allowed, tc.allowed)
				}
				if !tc.allowed && !strings.Contains(out.Status.Reason, "refused admitfn access") {
					t.Errorf("reason %q does not say the registry refused admitfn", out.Status.Reason)
				}
				if tc.allowed && !strings.Contains(out.Status.AuditAnnotations["failed-open"], "registry refused admitfn") {
					t.Errorf("failed-open annotation %q", out.Status.AuditAnnotations["failed-open"])
				}
			})
		}
	}
}
