package notation_test

import (
	"strings"
	"testing"
	"time"

	"github.com/admitfn/admitfn/functions/notation"
	"github.com/admitfn/admitfn/functions/notation/notationtest"
)

const (
	manifestType = "application/vnd.oci.image.manifest.v1+json"
	digestA      = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB      = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	jws, cose    = "application/jose+json", "application/cose"
)

func TestVerify(t *testing.T) {
	t.Parallel()
	now := time.Now()
	release := notationtest.NewSigner(t, "Corp", "release", now.Add(-time.Minute))
	stranger := notationtest.NewSigner(t, "Other", "release", now.Add(-time.Minute))
	// Notation judges at the wall clock (notation-go takes no clock):
	// a signature that expires in a second, a second and a half ago.
	expiring := release.SignExpiring(t, manifestType, digestA, 512, jws, time.Second)
	time.Sleep(1500 * time.Millisecond)
	target := notation.Target{Repo: "registry.corp.example/app", Digest: digestA, MediaType: manifestType, Size: 512}
	tests := []struct {
		name       string
		store      []byte
		identities []string
		envelope   []byte
		mediaType  string
		wantFail   string // part of the reason; empty when it verifies
	}{
		{name: "JWS by a trusted identity", store: release.TrustStore, identities: []string{"x509.subject: C=US, ST=WA, O=Corp, CN=release"},
			envelope: release.Sign(t, manifestType, digestA, 512, jws), mediaType: jws},
		{name: "COSE by a trusted identity", store: release.TrustStore, identities: []string{"x509.subject: C=US, ST=WA, O=Corp, CN=release"},
			envelope: release.Sign(t, manifestType, digestA, 512, cose), mediaType: cose},
		{name: "any identity the store vouches for", store: release.TrustStore, identities: []string{"*"},
			envelope: release.Sign(t, manifestType, digestA, 512, jws), mediaType: jws},
		{name: "a subset of the subject is enough", store: release.TrustStore, identities: []string{"x509.subject: C=US, ST=WA, O=Corp"},
			envelope: release.Sign(t, manifestType, digestA, 512, jws), mediaType: jws},
		{name: "identity not trusted", store: release.TrustStore, identities: []string{"x509.subject: C=US, ST=WA, O=Corp, CN=security"},
			envelope: release.Sign(t, manifestType, digestA, 512, jws), mediaType: jws, wantFail: "trusted identities"},
		{name: "chain to another store", store: release.TrustStore, identities: []string{"*"},
			envelope: stranger.Sign(t, manifestType, digestA, 512, jws), mediaType: jws, wantFail: "does not contain any trusted certificate"},
		{name: "signature of another digest", store: release.TrustStore, identities: []string{"*"},
			envelope: release.Sign(t, manifestType, digestB, 512, jws), mediaType: jws, wantFail: "content descriptor mismatch"},
		{name: "another size", store: release.TrustStore, identities: []string{"*"},
			envelope: release.Sign(t, manifestType, digestA, 513, jws), mediaType: jws, wantFail: "content descriptor mismatch"},
		{name: "signature expired", store: release.TrustStore, identities: []string{"*"},
			envelope: expiring, mediaType: jws, wantFail: "expired"},
		{name: "envelope of another media type than said", store: release.TrustStore, identities: []string{"*"},
			envelope: release.Sign(t, manifestType, digestA, 512, jws), mediaType: cose, wantFail: "unable to parse the digital signature"},
		{name: "junk", store: release.TrustStore, identities: []string{"*"}, envelope: []byte("{}"), mediaType: jws, wantFail: "certificate chain is not present"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, err := notation.New(notation.Options{TrustStore: tt.store, TrustedIdentities: tt.identities})
			if err != nil {
				t.Fatal(err)
			}
			v := a.Verify(t.Context(), target, tt.mediaType, tt.envelope, now)
			t.Logf("who %q, err %v", v.Who, v.Err)
			if tt.wantFail == "" {
				if v.Err != nil || v.Who != release.Subject {
					t.Fatalf("Verify = %q, %v; want %q", v.Who, v.Err, release.Subject)
				}
				return
			}
			if v.Err == nil || !strings.Contains(v.Err.Error(), tt.wantFail) {
				t.Fatalf("Verify = %q, %v; want an error containing %q", v.Who, v.Err, tt.wantFail)
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	s := notationtest.NewSigner(t, "Corp", "release", time.Now())
	for name, tc := range map[string]struct {
		o    notation.Options
		want string
	}{
		"no certificate":    {notation.Options{TrustStore: []byte("junk"), TrustedIdentities: []string{"*"}}, "trustStore holds no PEM certificate"},
		"no identity":       {notation.Options{TrustStore: s.TrustStore}, "trustedIdentities is empty"},
		"not an identity":   {notation.Options{TrustStore: s.TrustStore, TrustedIdentities: []string{"CN=release"}}, "trustedIdentities"},
		"not a subject DN":  {notation.Options{TrustStore: s.TrustStore, TrustedIdentities: []string{"x509.subject: nonsense"}}, "trustedIdentities"},
		"no C, ST and O":    {notation.Options{TrustStore: s.TrustStore, TrustedIdentities: []string{"x509.subject: CN=release"}}, "mandatory RDN attribute"},
		"wildcard and more": {notation.Options{TrustStore: s.TrustStore, TrustedIdentities: []string{"*", "x509.subject: CN=a"}}, "trustedIdentities"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := notation.New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
