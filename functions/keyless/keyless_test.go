package keyless_test

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/admitfn/admitfn/functions/keyless"
	"github.com/admitfn/admitfn/functions/keyless/keylesstest"
)

const (
	issuer  = "https://token.actions.example"
	subject = "https://git.example/org/app/.github/workflows/release.yml@refs/heads/main"
)

func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func TestVerify(t *testing.T) {
	t.Parallel()
	image, other := digestOf("image"), digestOf("other")
	signs := func(d string) []byte { return keylesstest.Statement(d, keylesstest.SignPredicate, "{}") }
	ca := keylesstest.NewCA(t)
	log := keylesstest.NewLog(t)
	exact := []keyless.Identity{{Issuer: issuer, Subject: subject}}
	tests := []struct {
		name     string
		root     []byte
		ids      []keyless.Identity
		tlog     bool
		bundle   []byte
		wantWho  string
		wantFail string // part of the reason; empty when it verifies
	}{
		{name: "certificate valid now, no log required", root: ca.TrustedRoot, ids: exact,
			bundle: ca.Bundle(t, signs(image), subject, issuer, time.Now()), wantWho: subject + " (issuer " + issuer + ")"},
		{name: "subject by regular expression", root: ca.TrustedRoot,
			ids:    []keyless.Identity{{Issuer: issuer, SubjectRegExp: `https://git\.example/org/[^/]+/\.github/workflows/release\.yml@refs/heads/main`}},
			bundle: ca.Bundle(t, signs(image), subject, issuer, time.Now()), wantWho: subject + " (issuer " + issuer + ")"},
		{name: "regular expression matched in full", root: ca.TrustedRoot,
			ids:    []keyless.Identity{{Issuer: issuer, SubjectRegExp: `https://git\.example/org/app`}},
			bundle: ca.Bundle(t, signs(image), subject, issuer, time.Now()), wantFail: "certificate identity " + subject + " (issuer " + issuer + ") is not allowed"},
		{name: "identity not allowed", root: ca.TrustedRoot, ids: exact,
			bundle: ca.Bundle(t, signs(image), "mallory@example.com", issuer, time.Now()), wantFail: "certificate identity mallory@example.com (issuer " + issuer + ") is not allowed"},
		{name: "issuer not allowed", root: ca.TrustedRoot, ids: exact,
			bundle: ca.Bundle(t, signs(image), subject, "https://evil.example", time.Now()), wantFail: "(issuer https://evil.example) is not allowed"},
		{name: "signature for another digest", root: ca.TrustedRoot, ids: exact,
			bundle: ca.Bundle(t, signs(other), subject, issuer, time.Now()), wantFail: "does not verify"},
		{name: "expired certificate without a log entry", root: ca.TrustedRoot, ids: exact,
			bundle: ca.Bundle(t, signs(image), subject, issuer, time.Now().Add(-time.Hour)), wantFail: "does not verify"},
		{name: "certificate from another authority", root: log.TrustedRoot, ids: exact,
			bundle: ca.Bundle(t, signs(image), subject, issuer, time.Now()), wantFail: "does not verify"},
		{name: "tampered statement", root: ca.TrustedRoot, ids: exact,
			bundle: tamper(t, ca.Bundle(t, signs(image), subject, issuer, time.Now())), wantFail: "does not verify"},
		{name: "log entry required and present", root: log.TrustedRoot, ids: exact, tlog: true,
			bundle: log.Bundle(t, signs(image), subject, issuer, true), wantWho: subject + " (issuer " + issuer + ")"},
		{name: "log entry required, none", root: log.TrustedRoot, ids: exact, tlog: true,
			bundle: log.Bundle(t, signs(image), subject, issuer, false), wantFail: "carries no transparency-log entry, and the policy requires one"},
		{name: "log entry not required, present", root: log.TrustedRoot, ids: exact,
			bundle: log.Bundle(t, signs(image), subject, issuer, true), wantWho: subject + " (issuer " + issuer + ")"},
		{name: "not a bundle", root: ca.TrustedRoot, ids: exact, bundle: []byte(`{"mediaType":"x"}`), wantFail: "is not a sigstore bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := keyless.New(keyless.Options{TrustedRoot: tt.root, Identities: tt.ids, TransparencyLog: tt.tlog})
			if err != nil {
				t.Fatal(err)
			}
			v := a.Verify(tt.bundle, image, time.Now())
			who, err := v.Who, v.Err
			if tt.wantFail == "" {
				if err != nil || who != tt.wantWho {
					t.Fatalf("Verify = %q, %v; want %q", who, err, tt.wantWho)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantFail) {
				t.Fatalf("Verify = %q, %v; want an error containing %q", who, err, tt.wantFail)
			}
		})
	}
}

// TestVerifyAtTheGivenTime checks that a keyless verdict is reached on the
// clock the caller gives, not the wall clock, and says how long it holds:
// without a log entry until the certificate's validity changes, with one
// for good.
func TestVerifyAtTheGivenTime(t *testing.T) {
	t.Parallel()
	image := digestOf("image")
	statement := keylesstest.Statement(image, keylesstest.SignPredicate, "{}")
	ca := keylesstest.NewCA(t)
	log := keylesstest.NewLog(t)
	ids := []keyless.Identity{{Issuer: issuer, Subject: subject}}
	// Within the test CA's own validity (its intermediate is valid from
	// two minutes before it was made): a leaf valid from a minute ago for
	// ten minutes.
	signedAt := time.Now().Add(-time.Minute).Truncate(time.Second)
	leaf := ca.Bundle(t, statement, subject, issuer, signedAt)
	noLog, err := keyless.New(keyless.Options{TrustedRoot: ca.TrustedRoot, Identities: ids})
	if err != nil {
		t.Fatal(err)
	}
	withLog, err := keyless.New(keyless.Options{TrustedRoot: log.TrustedRoot, Identities: ids, TransparencyLog: true})
	if err != nil {
		t.Fatal(err)
	}
	logged := log.Bundle(t, statement, subject, issuer, true)

	type got struct {
		Verified bool
		Until    time.Time
	}
	tests := []struct {
		name   string
		a      *keyless.Authority
		bundle []byte
		now    time.Time
		want   got
	}{
		{"while the certificate is valid", noLog, leaf, signedAt.Add(time.Minute),
			got{true, certNotAfter(t, leaf).Add(time.Nanosecond)}},
		// The wall clock says valid; the clock given says expired.
		{"twenty minutes on, expired", noLog, leaf, signedAt.Add(20 * time.Minute), got{false, keyless.Forever}},
		{"before it was valid", noLog, leaf, signedAt.Add(-30 * time.Second), got{false, certNotBefore(t, leaf)}},
		{"with a log entry, years from now", withLog, logged, time.Now().AddDate(5, 0, 0), got{true, keyless.Forever}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.a.Verify(tt.bundle, image, tt.now)
			if diff := cmp.Diff(tt.want, got{v.Err == nil, v.Until}); diff != "" {
				t.Errorf("Verify (-want +got):\n%s\nerror: %v", diff, v.Err)
			}
		})
	}
}

// certOf reads the leaf certificate of a bundle.
func certOf(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	var bundle struct {
		VerificationMaterial struct {
			Certificate struct {
				RawBytes []byte `json:"rawBytes"`
			} `json:"certificate"`
		} `json:"verificationMaterial"`
	}
	if err := json.Unmarshal(b, &bundle); err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(bundle.VerificationMaterial.Certificate.RawBytes)
	if err != nil {
		t.Fatalf("bundle certificate: %v", err)
	}
	return c
}

func certNotAfter(t *testing.T, b []byte) time.Time  { return certOf(t, b).NotAfter }
func certNotBefore(t *testing.T, b []byte) time.Time { return certOf(t, b).NotBefore }

// tamper changes the statement inside a bundle (base64 "payload") by one
// character of its subject name.
func tamper(t *testing.T, bundle []byte) []byte {
	t.Helper()
	s := string(bundle)
	i := strings.Index(s, `"payload":"`)
	if i < 0 {
		t.Fatalf("no payload in %s", s)
	}
	j := i + len(`"payload":"`) + 10
	c := byte('A')
	if s[j] == 'A' {
		c = 'B'
	}
	return []byte(s[:j] + string(c) + s[j+1:])
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	ca := keylesstest.NewCA(t)
	ok := []keyless.Identity{{Issuer: issuer, Subject: subject}}
	tests := []struct {
		name string
		o    keyless.Options
		want string
	}{
		{"not a trusted root", keyless.Options{TrustedRoot: []byte(`{}`), Identities: ok}, "trustedRoot"},
		{"no identity", keyless.Options{TrustedRoot: ca.TrustedRoot}, "identities is empty"},
		{"log required, none in the root", keyless.Options{TrustedRoot: ca.TrustedRoot, Identities: ok, TransparencyLog: true}, "lists no transparency log"},
		{"SCT required, no CT log in the root", keyless.Options{TrustedRoot: ca.TrustedRoot, Identities: ok, CTLog: true}, "ctLog is required but trustedRoot lists no certificate-transparency log"},
		{"value and expression", keyless.Options{TrustedRoot: ca.TrustedRoot, Identities: []keyless.Identity{{Issuer: issuer, Subject: "a", SubjectRegExp: "a"}}}, "not both"},
		{"bad expression", keyless.Options{TrustedRoot: ca.TrustedRoot, Identities: []keyless.Identity{{Issuer: issuer, SubjectRegExp: "("}}}, "identities[0]: subject"},
		{"no issuer", keyless.Options{TrustedRoot: ca.TrustedRoot, Identities: []keyless.Identity{{Subject: subject}}}, "identities[0]: issuer: is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := keyless.New(tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
