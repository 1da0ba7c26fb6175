package review

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/admitfn/admitfn/functions/keyless/keylesstest"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/registrytest"
)

// signedSetup is a registry holding app:v1, signed cosign's way, and
// app:v2, unsigned, and a reviewer whose policy requires the signature.
func signedSetup(t testing.TB) (*registrytest.Registry, *Reviewer, func() *Reviewer) {
	t.Helper()
	key := registrytest.NewKey(t)
	pub := strings.ReplaceAll(strings.TrimSpace(key.PEM), "\n", "\n          ")
	reg := registrytest.New(t)
	digest := reg.Push("app:v1", registrytest.Image(t, nil))
	reg.Push("app:v2", registrytest.Image(t, nil))
	reg.Sign("app", digest, key.Sign)
	p, err := policy.Parse([]byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: [%q]}
  rules:
  - name: signed
    signatures:
      authorities:
      - name: release
        key: |
          %s
`, reg.Host(), pub)))
	if err != nil {
		t.Fatal(err)
	}
	fresh := func() *Reviewer { return registryReviewer(t, p) }
	return reg, fresh(), fresh
}

// TestSignedImagesThroughTheResolver reads cosign-format signatures from a
// registry: a signed tag is admitted, an unsigned one is not, and what a
// verification costs the registry is counted.
func TestSignedImagesThroughTheResolver(t *testing.T) {
	t.Parallel()
	reg, rv, _ := signedSetup(t)
	review := func(tag string) policy.Decision {
		return rv.Review(context.Background(), Budget{}, policy.Request{Namespace: "default", Images: []policy.Image{{Ref: reg.Ref("app", tag)}}})
	}
	reg.ResetCounts()
	if d := review(":v1"); !d.Allowed {
		t.Errorf("signed image denied: %s", d.Reason())
	}
	cold := reg.Requests()
	t.Logf("registry requests for one cold verification: %v", cold)
	if d := review(":v2"); d.Allowed || !strings.Contains(d.Reason(), "has no signature") {
		t.Errorf("unsigned image: allowed=%v %s", d.Allowed, d.Reason())
	}
	reg.ResetCounts()
	if d := review(":v1"); !d.Allowed {
		t.Errorf("signed image denied when cached: %s", d.Reason())
	}
	if n := reg.ManifestRequests(); n != 0 {
		t.Errorf("a warm verification made %d manifest requests, want 0 (cached)", n)
	}
}

// BenchmarkReviewSigned is a review that verifies a signature, cold (a new
// resolver, so every lookup goes to the registry) and warm (cached); it
// reports the registry requests a verification makes.
func BenchmarkReviewSigned(b *testing.B) {
	reg, _, fresh := signedSetup(b)
	benchColdWarm(b, reg, fresh, reg.Ref("app", ":v1"))
}

// benchColdWarm reviews image cold (a fresh reviewer each time: empty
// caches, every registry request counted) and warm (one reviewer, its
// caches filled by a first review).
func benchColdWarm(b *testing.B, reg *registrytest.Registry, fresh func() *Reviewer, image string) {
	req := policy.Request{Namespace: "default", Images: []policy.Image{{Ref: image}}}
	b.Run("cold", func(b *testing.B) {
		reg.ResetCounts()
		for b.Loop() {
			if d := fresh().Review(context.Background(), Budget{}, req); !d.Allowed {
				b.Fatal(d.Reason())
			}
		}
		total := 0
		for _, n := range reg.Requests() {
			total += n
		}
		b.ReportMetric(float64(total)/float64(b.N), "registry-requests/op")
	})
	b.Run("warm", func(b *testing.B) {
		warm := fresh()
		warm.Review(context.Background(), Budget{}, req)
		for b.Loop() {
			if d := warm.Review(context.Background(), Budget{}, req); !d.Allowed {
				b.Fatal(d.Reason())
			}
		}
	})
}

// keylessSetup is a registry with bundles attached through the referrers
// API — app:v1 signed keylessly by the allowed identity with a log entry,
// app:v2 by another identity, app:v3 unsigned — and a function making a
// reviewer from a freshly parsed policy (empty caches and verification
// memo) whose keyless authority requires the identity and a log entry.
func keylessSetup(t testing.TB) (*registrytest.Registry, func() *Reviewer) {
	t.Helper()
	const issuer, subject = "https://token.ci.example", "release@ci.example"
	log := keylesstest.NewLog(t)
	reg := registrytest.New(t, registrytest.WithReferrers())
	good := reg.Push("app:v1", registrytest.Image(t, nil))
	other := reg.Push("app:v2", registrytest.Image(t, nil))
	reg.Push("app:v3", registrytest.Image(t, nil))
	signs := func(d string) []byte { return keylesstest.Statement(d, keylesstest.SignPredicate, "{}") }
	reg.AttachBundle("app", good, log.Bundle(t, signs(good), subject, issuer, true))
	reg.AttachBundle("app", other, log.Bundle(t, signs(other), "mallory@ci.example", issuer, true))
	doc := []byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry: {insecure: [%q]}
  rules:
  - name: signed
    signatures:
      authorities:
      - name: release
        keyless:
          trustedRoot: |
            %s
          identities: [{issuer: %q, subject: %q}]
          transparencyLog: required
          ctLog: notRequired
`, reg.Host(), strings.ReplaceAll(string(log.TrustedRoot), "\n", "\n            "), issuer, subject))
	return reg, func() *Reviewer {
		p, err := policy.Parse(doc)
		if err != nil {
			t.Fatal(err)
		}
		return registryReviewer(t, p)
	}
}

// TestKeylessThroughTheResolver reads sigstore bundles attached through
// the referrers API and judges them against a keyless authority: signed
// by the allowed identity (with a log entry) admitted, by another identity
// denied naming it, unsigned denied; a second review of the signed image
// is answered from the cache.
func TestKeylessThroughTheResolver(t *testing.T) {
	t.Parallel()
	reg, fresh := keylessSetup(t)
	rv := fresh()
	review := func(tag string) policy.Decision {
		return rv.Review(context.Background(), Budget{}, policy.Request{Namespace: "default", Images: []policy.Image{{Ref: reg.Ref("app", tag)}}})
	}
	if d := review(":v1"); !d.Allowed {
		t.Errorf("image signed keylessly by the allowed identity denied: %s", d.Reason())
	}
	if d := review(":v2"); d.Allowed || !strings.Contains(d.Reason(), "certificate identity mallory@ci.example (issuer https://token.ci.example) is not allowed") {
		t.Errorf("image signed by another identity: allowed=%v %q", d.Allowed, d.Reason())
	}
	if d := review(":v3"); d.Allowed || !strings.Contains(d.Reason(), "has no signature") {
		t.Errorf("unsigned image: allowed=%v %q", d.Allowed, d.Reason())
	}
	reg.ResetCounts()
	if d := review(":v1"); !d.Allowed {
		t.Errorf("second review denied: %s", d.Reason())
	}
	if n := reg.ManifestRequests(); n != 0 {
		t.Errorf("second review made %d manifest requests, want the cached answer", n)
	}
}

// BenchmarkReviewKeyless is a keyless-verified review: cold (a freshly
// parsed policy, so empty caches and verification memo: the registry
// round trips, the bundle's certificate chain, log entry and signature),
// and warm.
func BenchmarkReviewKeyless(b *testing.B) {
	reg, fresh := keylessSetup(b)
	benchColdWarm(b, reg, fresh, reg.Ref("app", ":v1"))
}
