package hostile

import (
	"encoding/base64"
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/admitfn/admitfn/functions/imagepolicy"
	"github.com/admitfn/admitfn/functions/mutating"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/functions/resolver"
	"github.com/admitfn/admitfn/functions/review"
	"github.com/admitfn/admitfn/functions/validating"
	"github.com/admitfn/admitfn/test/internal/harness"
)

// TestHostileRegistry: what anyone who may push to a repository can put
// there, sent through all three handlers over HTTP. Every rule fails open
// on registry errors (onRegistryError: allow), so a hostile artifact that
// became a registry error would be admitted: each must be denied by the
// ImageReview and the validating handler, answered well-formed by the
// mutating one, and one review must allocate no more than a few MiB.
func TestHostileRegistry(t *testing.T) {
	reg := registrytest.New(t, registrytest.WithReferrers())
	key := registrytest.NewKey(t)
	srv := registryServer(t, reg, key)
	sigTag := func(digest string) string { return strings.Replace(digest, ":", "-", 1) + ".sig" }
	child := func(arch, variant, user string, named bool) registrytest.Child {
		c := registrytest.Child{Image: registrytest.Image(t, func(cf *v1.ConfigFile) {
			cf.Architecture, cf.Variant, cf.Config.User = arch, variant, user
		})}
		if named {
			c.Platform = &v1.Platform{OS: "linux", Architecture: arch, Variant: variant}
		}
		return c
	}
	signedIndex := func(repo string, children ...registrytest.Child) string {
		d := reg.PushIndexOf(repo+":v1", children...)
		reg.Sign(repo, d, key.Sign)
		return reg.Ref(repo, ":v1")
	}
	signedImage := func(repo string) (string, string) {
		d := reg.Push(repo+":v1", registrytest.Image(t, nil))
		return reg.Ref(repo, ":v1"), d
	}

	cases := []struct {
		name  string
		image func() string
		deny  string // what the denial says; "" when it must be admitted
	}{
		{"a root child that names no platform", func() string {
			return signedIndex("noplatform", child("amd64", "", "65532", true), child("amd64", "", "", false))
		}, `violates rule "non-root": runs as root`},
		{"a root 386 child beside a non-root amd64 one", func() string {
			return signedIndex("fallback386", child("amd64", "", "65532", true), child("386", "", "", true))
		}, "on linux/386"},
		{"a root arm/v7 child beside a non-root arm64 one", func() string {
			return signedIndex("fallbackarm", child("arm64", "", "65532", true), child("arm", "v7", "", true))
		}, "on linux/arm/v7"},
		{"an index of 500 children", func() string {
			many := make([]registrytest.Child, 500)
			img := registrytest.Image(t, nil)
			for i := range many {
				many[i] = registrytest.Child{Image: img, Platform: &v1.Platform{OS: "linux", Architecture: fmt.Sprintf("arch%d", i)}}
			}
			return signedIndex("many", many...)
		}, "more than the 128 admitfn reads"},
		{"a 2 MiB config", func() string {
			d := reg.Push("bigconfig:v1", registrytest.Image(t, func(cf *v1.ConfigFile) {
				cf.Config.Labels = map[string]string{"junk": strings.Repeat("x", 2<<20)}
			}))
			reg.Sign("bigconfig", d, key.Sign)
			return reg.Ref("bigconfig", ":v1")
		}, "past the 1 MiB admitfn reads for one image"},
		{"a .sig tag of 200 junk signatures after the valid one", func() string {
			ref, d := signedImage("flood")
			payload := reg.SignedPayload("flood", d)
			layers := []registrytest.Layer{{Data: payload, MediaType: "application/vnd.dev.cosign.simplesigning.v1+json",
				Annotations: map[string]string{"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(key.Sign(payload))}}}
			for i := range 200 {
				layers = append(layers, registrytest.Layer{Data: []byte(fmt.Sprintf(`{"junk":%d}`, i)), MediaType: "application/vnd.dev.cosign.simplesigning.v1+json",
					Annotations: map[string]string{"dev.cosignproject.cosign/signature": "AAAA"}})
			}
			reg.PushArtifact("flood:"+sigTag(d), layers...)
			return ref
		}, "admitfn passed over 169 .sig artifact layers past the newest 32"},
		{"a keyless .sig layer with a 200 KiB certificate annotation", func() string {
			ref, d := signedImage("bigcert")
			payload := reg.SignedPayload("bigcert", d)
			reg.PushArtifact("bigcert:"+sigTag(d), registrytest.Layer{Data: payload, MediaType: "application/vnd.dev.cosign.simplesigning.v1+json",
				Annotations: map[string]string{"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(key.Sign(payload)),
					"dev.sigstore.cosign/certificate": strings.Repeat("A", 200<<10)}})
			return ref
		}, "admitfn passed over 1 .sig layer with an annotation larger than 16 KiB"},
		{"a .sig tag that is an index", func() string {
			ref, d := signedImage("sigindex")
			reg.PushIndexOf("sigindex:"+sigTag(d), registrytest.Child{Image: registrytest.Image(t, nil)})
			return ref
		}, ".sig artifact that is not an image manifest"},
		{"100 junk referrers beside a valid .sig signature", func() string {
			ref, d := signedImage("referrers")
			reg.Sign("referrers", d, key.Sign)
			for i := range 100 {
				reg.AttachBundle("referrers", d, []byte(fmt.Sprintf(`{"junk":%d}`, i)))
			}
			return ref
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.image()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			code, out := send(t, srv, imagepolicy.Path, harness.ImageReview("default", img))
			runtime.ReadMemStats(&after)
			ir := checkImageReviewAnswer(t, code, out)
			t.Logf("ImageReview: %.1f MiB allocated; %s", float64(after.TotalAlloc-before.TotalAlloc)/(1<<20), ir.Status.Reason)
			if n := after.TotalAlloc - before.TotalAlloc; n > 8<<20 {
				t.Errorf("one review allocated %.1f MiB, more than 8 MiB", float64(n)/(1<<20))
			}
			judged(t, "ImageReview", ir.Status.Allowed, ir.Status.Reason, ir.Status.AuditAnnotations["failed-open"], tc.deny)

			body := harness.PodReview("u-"+strings.ReplaceAll(tc.name, " ", "-"), "default", img)
			code, out = send(t, srv, validating.Path, body)
			resp := checkAdmissionAnswer(t, code, body, out)
			reason := ""
			if resp.Result != nil {
				reason = resp.Result.Message
			}
			judged(t, "validating", resp.Allowed, reason, resp.AuditAnnotations["failed-open"], tc.deny)

			code, out = send(t, srv, mutating.Path, body)
			if resp := checkAdmissionAnswer(t, code, body, out); !resp.Allowed {
				t.Errorf("mutating handler denied (it never judges): %+v", resp.Result)
			}
		})
	}
}

// judged checks one handler's answer: denied saying deny, or admitted
// when deny is empty; never failed open.
func judged(t *testing.T, handler string, allowed bool, reason, failedOpen, deny string) {
	t.Helper()
	switch {
	case failedOpen != "":
		t.Errorf("%s failed open: %s", handler, failedOpen)
	case deny == "" && !allowed:
		t.Errorf("%s denied: %s", handler, reason)
	case deny != "" && (allowed || !strings.Contains(reason, deny)):
		t.Errorf("%s: allowed=%v reason %q; want a denial saying %q", handler, allowed, reason, deny)
	}
}

// registryServer serves the three handlers with a policy that asks reg
// for configs and signatures, failing open on registry errors.
func registryServer(t *testing.T, reg *registrytest.Registry, key registrytest.Key) *httptest.Server {
	t.Helper()
	p, err := policy.Parse([]byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: hostile-registry}
spec:
  registry: {insecure: [%q], platforms: [linux/amd64, linux/arm64]}
  mutation: {namespaces: ["*"], pinDigests: true}
  rules:
  - name: non-root
    nonRoot: true
    onRegistryError: allow
  - name: signed
    onRegistryError: allow
    signatures:
      authorities:
      - name: release
        key: |
          %s
`, reg.Host(), strings.ReplaceAll(strings.TrimSpace(key.PEM), "\n", "\n          "))))
	if err != nil {
		t.Fatal(err)
	}
	res, err := resolver.New(p.Registry, resolver.WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		t.Fatal(err)
	}
	return serveAll(t, review.New(p, res))
}
