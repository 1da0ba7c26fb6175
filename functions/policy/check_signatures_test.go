package policy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/admitfn/admitfn/functions/keyless/keylesstest"
	"github.com/admitfn/admitfn/functions/notation/notationtest"
)

// testSigner is a key pair that signs as cosign does.
type testSigner struct {
	pem  string
	sign func(payload []byte) []byte
}

func newSigner(t *testing.T, kind string) testSigner {
	t.Helper()
	var pub crypto.PublicKey
	var sign func([]byte) []byte
	switch kind {
	case "ecdsa":
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub = &k.PublicKey
		sign = func(p []byte) []byte { h := sha256.Sum256(p); s, _ := ecdsa.SignASN1(rand.Reader, k, h[:]); return s }
	case "ecdsa-p1363": // r‖s, fixed size, as some HSMs and KMSs sign
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub = &k.PublicKey
		sign = func(p []byte) []byte {
			h := sha256.Sum256(p)
			r, s, _ := ecdsa.Sign(rand.Reader, k, h[:])
			return append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
		}
	case "rsa-pss":
		k, _ := rsa.GenerateKey(rand.Reader, 2048)
		pub = &k.PublicKey
		sign = func(p []byte) []byte {
			h := sha256.Sum256(p)
			s, _ := rsa.SignPSS(rand.Reader, k, crypto.SHA256, h[:], nil)
			return s
		}
	case "rsa":
		k, _ := rsa.GenerateKey(rand.Reader, 2048)
		pub = &k.PublicKey
		sign = func(p []byte) []byte {
			h := sha256.Sum256(p)
			s, _ := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:])
			return s
		}
	case "ed25519":
		pk, k, _ := ed25519.GenerateKey(rand.Reader)
		pub = pk
		sign = func(p []byte) []byte { return ed25519.Sign(k, p) }
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return testSigner{pem: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), sign: sign}
}

func payloadFor(digest string) []byte {
	return []byte(fmt.Sprintf(`{"critical":{"identity":{"docker-reference":"registry.corp/app"},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, digest))
}

func indent(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n          ") }

// TestSignatures judges cosign-style signatures with real keys of every
// kind cosign uses.
func TestSignatures(t *testing.T) {
	release, ci, stranger := newSigner(t, "ecdsa"), newSigner(t, "ed25519"), newSigner(t, "rsa")
	rsaKey := newSigner(t, "rsa")
	policyFor := func(require string) *Policy {
		return mustParse(t, fmt.Sprintf(`  rules:
  - name: signed
    signatures:
      require: %s
      authorities:
      - name: release
        key: |
          %s
      - name: ci
        key: |
          %s
      - name: rsa
        key: |
          %s
`, require, indent(release.pem), indent(ci.pem), indent(rsaKey.pem)))
	}
	good := payloadFor(dA)
	tampered := []byte(strings.Replace(string(good), "registry.corp/app", "registry.corp/evil", 1))
	tests := []struct {
		name    string
		require string
		sigs    []Signature
		problem string // empty: allowed
	}{
		{"ECDSA by release", "any", []Signature{{Payload: good, Signature: release.sign(good)}}, ""},
		{"Ed25519 by ci", "any", []Signature{{Payload: good, Signature: ci.sign(good)}}, ""},
		{"RSA", "any", []Signature{{Payload: good, Signature: rsaKey.sign(good)}}, ""},
		{"unsigned", "any", nil, "has no signature (cosign's sha256-"},
		{"signed by a stranger", "any", []Signature{{Payload: good, Signature: stranger.sign(good)}}, `signed, but not by keys "release", "ci", "rsa"`},
		{"signature for another digest", "any", []Signature{{Payload: payloadFor(dB), Signature: release.sign(payloadFor(dB))}}, `signed by key "release" for another digest, not ` + dA},
		{"tampered payload", "any", []Signature{{Payload: tampered, Signature: release.sign(good)}}, "signed, but not by"},
		// Signed by the key, but not a cosign payload: an in-toto
		// statement, a payload of another type. cosign refuses it too; the
		// reason must not blame the digest.
		{"a payload of another type", "any", []Signature{{Payload: []byte(`{"critical":{"type":"atomic container signature","image":{"docker-manifest-digest":"` + dA + `"}}}`), Signature: release.sign([]byte(`{"critical":{"type":"atomic container signature","image":{"docker-manifest-digest":"` + dA + `"}}}`))}},
			`signed by key "release" over something that is not a cosign signature payload`},
		{"tampered signature", "any", []Signature{{Payload: good, Signature: append(release.sign(good)[:8], make([]byte, 64)...)}}, "signed, but not by"},
		{"all: every key signed", "all", []Signature{{Payload: good, Signature: release.sign(good)}, {Payload: good, Signature: ci.sign(good)}, {Payload: good, Signature: rsaKey.sign(good)}}, ""},
		{"all: one key missing", "all", []Signature{{Payload: good, Signature: release.sign(good)}, {Payload: good, Signature: ci.sign(good)}}, `signed, but not by key "rsa"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := judged(t, policyFor(tc.require), Facts{Level: LevelSignatures, Digest: dA, Signatures: tc.sigs}, tc.problem)
			if tc.problem != "" && !strings.Contains(d.Reason(), `violates rule "signed"`) {
				t.Errorf("Reason=%q, want a denial by the rule", d.Reason())
			}
		})
	}
	for decl, want := range map[string]string{
		"require: some\n      authorities: [{name: a, key: x}]": `require: "some" is not one of any, all`,
		"authorities: []":                       "is empty",
		"authorities: [{name: a}]":              "key is empty",
		"authorities: [{name: a, key: notpem}]": "holds no PEM block",
	} {
		_, err := Parse([]byte("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  rules:\n  - name: s\n    signatures:\n      " + decl + "\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("signatures %q: %v, want an error containing %q", decl, err, want)
		}
	}
}

// judged evaluates registry.corp/app:v1 with facts and checks the
// decision: admitted when problem is empty, else denied with a reason
// containing problem.
func judged(t *testing.T, p *Policy, facts Facts, problem string) Decision {
	t.Helper()
	return judgedAt(t, p, facts, problem, now)
}

// judgedAt is judged on the engine clock at: keyless certificates made
// by the test are valid around the wall clock's now.
func judgedAt(t *testing.T, p *Policy, facts Facts, problem string, at time.Time) Decision {
	t.Helper()
	img := "registry.corp/app:v1"
	d := p.Evaluate(Request{Namespace: "default", Images: []Image{{Ref: img}}}, map[string]Facts{img: facts}, at)
	switch {
	case problem == "" && !d.Allowed:
		t.Errorf("denied: %s", d.Reason())
	case problem != "" && (d.Allowed || !strings.Contains(d.Reason(), problem)):
		t.Errorf("Allowed=%v Reason=%q, want a denial saying %q", d.Allowed, d.Reason(), problem)
	}
	return d
}

// bundleFacts are the facts the resolver hands over for sigstore bundles:
// each bundle whole, and its DSSE envelope among the attestations.
func bundleFacts(t *testing.T, bundles ...[]byte) Facts {
	t.Helper()
	for _, b := range bundles {
		if !json.Valid(b) {
			t.Fatalf("bundle is not JSON: %s", b)
		}
	}
	return Facts{Level: LevelAttestations, Digest: dA, Bundles: bundles}
}

// dsse wraps an in-toto statement about digest in a DSSE envelope signed
// by s, as cosign attest does.
func dsse(t *testing.T, s testSigner, digest, predicateType, predicate string) []byte {
	t.Helper()
	hex := strings.TrimPrefix(digest, "sha256:")
	body := fmt.Sprintf(`{"_type":"https://in-toto.io/Statement/v0.1","predicateType":%q,"subject":[{"name":"registry.corp/app","digest":{"sha256":%q}}],"predicate":%s}`, predicateType, hex, predicate)
	const payloadType = "application/vnd.in-toto+json"
	pae := fmt.Sprintf("DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(body), body)
	return []byte(fmt.Sprintf(`{"payloadType":%q,"payload":%q,"signatures":[{"keyid":"","sig":%q}]}`,
		payloadType, base64.StdEncoding.EncodeToString([]byte(body)), base64.StdEncoding.EncodeToString(s.sign([]byte(pae)))))
}

func TestAttestations(t *testing.T) {
	release, stranger := newSigner(t, "ecdsa"), newSigner(t, "ed25519")
	const slsa = "https://slsa.dev/provenance/v0.2"
	p := mustParse(t, fmt.Sprintf(`  rules:
  - name: provenance
    attestations:
      predicateType: %s
      authorities:
      - name: release
        key: |
          %s
      conditions:
      - {path: predicate.builder.id, matches: "https://ci.corp/*"}
      - {path: predicate.buildType, equals: "https://ci.corp/build@v1"}
`, slsa, indent(release.pem)))
	good := `{"builder":{"id":"https://ci.corp/runner-7"},"buildType":"https://ci.corp/build@v1"}`
	tests := []struct {
		name    string
		atts    [][]byte
		problem string // empty: allowed
	}{
		{"attested", [][]byte{dsse(t, release, dA, slsa, good)}, ""},
		{"none", nil, `has no attestation of type "https://slsa.dev/provenance/v0.2"`},
		{"another predicate type", [][]byte{dsse(t, release, dA, "https://cyclonedx.org/bom", `{}`)}, "has no attestation"},
		{"about another digest", [][]byte{dsse(t, release, dB, slsa, good)}, "has no attestation"},
		{"signed by a stranger", [][]byte{dsse(t, stranger, dA, slsa, good)}, `but not signed by key "release"`},
		{"builder off the glob", [][]byte{dsse(t, release, dA, slsa, `{"builder":{"id":"https://evil/x"},"buildType":"https://ci.corp/build@v1"}`)},
			`predicate.builder.id is "https://evil/x", which does not match "https://ci.corp/*"`},
		{"buildType differs", [][]byte{dsse(t, release, dA, slsa, `{"builder":{"id":"https://ci.corp/r"},"buildType":"other"}`)}, `predicate.buildType is "other"`},
		{"one good among bad", [][]byte{dsse(t, stranger, dA, slsa, good), dsse(t, release, dA, slsa, good)}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			judged(t, p, Facts{Level: LevelAttestations, Digest: dA, Attestations: tc.atts}, tc.problem)
		})
	}
}

// TestKeylessSignatures judges sigstore bundles signed with certificates
// of a test authority and a test log (keylesstest), as the resolver hands
// them over: the bundle whole, and its envelope among the attestations.
func TestKeylessSignatures(t *testing.T) {
	const issuer, subject = "https://token.ci.example", "https://git.example/org/app/.ci/release.yml@refs/heads/main"
	ca, log := keylesstest.NewCA(t), keylesstest.NewLog(t)
	policyFor := func(root []byte, transparencyLog string) *Policy {
		return mustParse(t, fmt.Sprintf(`  rules:
  - name: signed
    signatures:
      authorities:
      - name: release-ci
        keyless:
          trustedRoot: |
            %s
          identities:
          - issuer: %s
            subjectRegExp: 'https://git\.example/org/[^/]+/\.ci/release\.yml@refs/heads/main'
          transparencyLog: %s
          ctLog: notRequired
`, strings.ReplaceAll(string(root), "\n", "\n            "), issuer, transparencyLog))
	}
	signs := func(d string) []byte { return keylesstest.Statement(d, keylesstest.SignPredicate, "{}") }
	tests := []struct {
		name    string
		policy  *Policy
		bundles [][]byte
		problem string // empty: allowed
	}{
		{"signed by an allowed identity", policyFor(ca.TrustedRoot, "notRequired"),
			[][]byte{ca.Bundle(t, signs(dA), subject, issuer, time.Now())}, ""},
		{"with a log entry, required", policyFor(log.TrustedRoot, "required"),
			[][]byte{log.Bundle(t, signs(dA), subject, issuer, true)}, ""},
		{"unsigned", policyFor(ca.TrustedRoot, "notRequired"), nil, "has no signature (cosign's sha256-"},
		{"unsigned: the fix needs no key", policyFor(ca.TrustedRoot, "notRequired"), nil, "keylessly as an allowed identity (cosign sign registry.corp/app@" + dA},
		{"identity not allowed", policyFor(ca.TrustedRoot, "notRequired"),
			[][]byte{ca.Bundle(t, signs(dA), "mallory@example.com", issuer, time.Now())},
			`not as keyless authority "release-ci" requires (certificate identity mallory@example.com (issuer https://token.ci.example) is not allowed)`},
		{"expired certificate, no log entry", policyFor(ca.TrustedRoot, "notRequired"),
			[][]byte{ca.Bundle(t, signs(dA), subject, issuer, time.Now().Add(-time.Hour))}, `not as keyless authority "release-ci" requires (does not verify`},
		{"log required, no entry", policyFor(log.TrustedRoot, "required"),
			[][]byte{log.Bundle(t, signs(dA), subject, issuer, false)}, "carries no transparency-log entry, and the policy requires one"},
		{"signature for another digest", policyFor(ca.TrustedRoot, "notRequired"),
			[][]byte{ca.Bundle(t, signs(dB), subject, issuer, time.Now())}, "has no signature"},
		{"an attestation is not a signature", policyFor(ca.TrustedRoot, "notRequired"),
			[][]byte{ca.Bundle(t, keylesstest.Statement(dA, "https://slsa.dev/provenance/v1", "{}"), subject, issuer, time.Now())}, "has no signature"},
		{"one good among bad", policyFor(ca.TrustedRoot, "notRequired"),
			[][]byte{ca.Bundle(t, signs(dA), "mallory@example.com", issuer, time.Now()), ca.Bundle(t, signs(dA), subject, issuer, time.Now())}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			judgedAt(t, tc.policy, bundleFacts(t, tc.bundles...), tc.problem, time.Now())
		})
	}
	for decl, want := range map[string]string{
		"{name: a, keyless: {trustedRoot: '{}', identities: [{issuer: i, subject: s}], transparencyLog: required, ctLog: notRequired}}": "keyless: trustedRoot",
		"{name: a, keyless: {trustedRoot: x, identities: [{issuer: i, subject: s}]}}":                                                   `keyless.transparencyLog "" is not required or notRequired`,
		"{name: a, keyless: {trustedRoot: x, identities: [{issuer: i, subject: s}], transparencyLog: required}}":                        `keyless.ctLog "" is not required or notRequired`,
		"{name: a, key: k, keyless: {trustedRoot: x, transparencyLog: required, ctLog: notRequired}}":                                   "has a key and keyless",
	} {
		_, err := Parse([]byte("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  rules:\n  - name: s\n    signatures:\n      authorities: [" + decl + "]\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("authority %s: %v, want an error containing %q", decl, err, want)
		}
	}
}

// TestKeylessAttestations: an attestation in a keyless bundle, its
// identity and its conditions.
func TestKeylessAttestations(t *testing.T) {
	const issuer, subject, slsa = "https://token.ci.example", "builder@ci.example", "https://slsa.dev/provenance/v1"
	ca := keylesstest.NewCA(t)
	p := mustParse(t, fmt.Sprintf(`  rules:
  - name: provenance
    attestations:
      predicateType: %s
      authorities:
      - name: ci
        keyless:
          trustedRoot: |
            %s
          identities: [{issuer: %s, subject: %s}]
          transparencyLog: notRequired
          ctLog: notRequired
      conditions:
      - {path: predicate.buildType, equals: "https://ci.example/build@v1"}
`, slsa, strings.ReplaceAll(string(ca.TrustedRoot), "\n", "\n            "), issuer, subject))
	good := keylesstest.Statement(dA, slsa, `{"buildType":"https://ci.example/build@v1"}`)
	tests := []struct {
		name    string
		bundle  []byte
		problem string
	}{
		{"attested by the identity", ca.Bundle(t, good, subject, issuer, time.Now()), ""},
		{"another identity", ca.Bundle(t, good, "mallory@example.com", issuer, time.Now()), `not as keyless authority "ci" requires (certificate identity mallory@example.com`},
		{"condition unmet", ca.Bundle(t, keylesstest.Statement(dA, slsa, `{"buildType":"other"}`), subject, issuer, time.Now()), `predicate.buildType is "other"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			judgedAt(t, p, bundleFacts(t, tc.bundle), tc.problem, time.Now())
		})
	}
}

// TestNamedFiles: keyFile and trustedRootFile are read when the policy is
// compiled (through WithReadFile here), listed in Policy.Files, and
// refused beside their inline field, relative, or unreadable.
func TestNamedFiles(t *testing.T) {
	release := newSigner(t, "ecdsa")
	ca := keylesstest.NewCA(t)
	files := map[string][]byte{"/keys/release.pub": []byte(release.pem), "/sigstore/trusted_root.json": ca.TrustedRoot}
	read := WithReadFile(func(path string) ([]byte, error) {
		if b, ok := files[path]; ok {
			return b, nil
		}
		return nil, fmt.Errorf("open %s: no such file or directory", path)
	})
	const head = "apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  rules:\n  - name: s\n"
	p, err := Parse([]byte(head+`    signatures:
      authorities:
      - {name: release, keyFile: /keys/release.pub}
      - name: ci
        keyless: {trustedRootFile: /sigstore/trusted_root.json, identities: [{issuer: i, subject: s}], transparencyLog: notRequired, ctLog: notRequired}
`), read)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/keys/release.pub", "/sigstore/trusted_root.json"}, p.Files); diff != "" {
		t.Errorf("Files (-want +got):\n%s", diff)
	}
	good := payloadFor(dA)
	judged(t, p, Facts{Level: LevelSignatures, Digest: dA, Signatures: []Signature{{Payload: good, Signature: release.sign(good)}}}, "")
	for decl, want := range map[string]string{
		"{name: a, key: x, keyFile: /keys/release.pub}": "spec.rules[0].signatures.authorities[0].keyFile: give key or its file, not both",
		"{name: a, keyFile: keys/release.pub}":          `"keys/release.pub" is not an absolute path`,
		"{name: a, keyFile: /keys/gone.pub}":            "spec.rules[0].signatures.authorities[0].keyFile: open /keys/gone.pub: no such file",
		"{name: a, keyless: {trustedRoot: x, trustedRootFile: /sigstore/trusted_root.json, identities: [{issuer: i, subject: s}], transparencyLog: required, ctLog: notRequired}}": "give trustedRoot or its file, not both",
	} {
		_, err := Parse([]byte(head+"    signatures:\n      authorities: ["+decl+"]\n"), read)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("authority %s: %v, want an error containing %q", decl, err, want)
		}
	}
}

// TestKeylessVerdictEndsWithTheCertificate judges one keyless bundle
// (no log entry) twice with the same compiled policy: while its
// certificate is valid, then on an engine clock past its expiry. The
// remembered "verified" must not outlive the certificate.
func TestKeylessVerdictEndsWithTheCertificate(t *testing.T) {
	const issuer, subject = "https://token.ci.example", "builder@ci.example"
	ca := keylesstest.NewCA(t)
	p := mustParse(t, fmt.Sprintf(`  rules:
  - name: signed
    signatures:
      authorities:
      - name: ci
        keyless:
          trustedRoot: |
            %s
          identities: [{issuer: %s, subject: %s}]
          transparencyLog: notRequired
          ctLog: notRequired
`, strings.ReplaceAll(string(ca.TrustedRoot), "\n", "\n            "), issuer, subject))
	signedAt := time.Now().Add(-time.Minute)
	facts := bundleFacts(t, ca.Bundle(t, keylesstest.Statement(dA, keylesstest.SignPredicate, "{}"), subject, issuer, signedAt))
	judgedAt(t, p, facts, "", signedAt.Add(time.Minute))
	judgedAt(t, p, facts, `not as keyless authority "ci" requires (does not verify`, signedAt.Add(time.Hour))
	// And back: a verdict of "expired" at a later instant does not make
	// an earlier review fail (each carries its own time).
	judgedAt(t, p, facts, "", signedAt.Add(2*time.Minute))
}

// TestAttestationCELConditions: a CEL condition over the statement, as
// the engine applies it to a signed attestation, and the load errors that
// name the field.
func TestAttestationCELConditions(t *testing.T) {
	release := newSigner(t, "ecdsa")
	const vuln = "https://cosign.sigstore.dev/attestation/vuln/v1"
	const noCritical = `!predicate.scanner.result.Results.exists(r, has(r.Vulnerabilities) && r.Vulnerabilities.exists(v, v.Severity == 'CRITICAL'))`
	p := mustParse(t, fmt.Sprintf(`  rules:
  - name: no-critical
    attestations:
      predicateType: %s
      authorities:
      - name: scanner
        key: |
          %s
      conditions:
      - cel: "%s"
      - cel: "timestamp(predicate.metadata.scanFinishedOn) > now - duration('168h')"
`, vuln, indent(release.pem), noCritical))
	report := func(severity, finished string) string {
		return fmt.Sprintf(`{"scanner":{"result":{"Results":[{"Target":"app","Vulnerabilities":[{"Severity":%q}]}]}},"metadata":{"scanFinishedOn":%q}}`, severity, finished)
	}
	recent := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name, predicate, problem string
	}{
		{"a recent scan, nothing critical", report("HIGH", recent), ""},
		{"a critical vulnerability", report("CRITICAL", recent), `does not meet the condition "` + noCritical + `"`},
		{"a scan older than a week", report("LOW", "2020-01-01T00:00:00Z"), `does not meet the condition "timestamp(predicate.metadata.scanFinishedOn) > now - duration('168h')"`},
		{"a report without the field", `{"scanner":{"result":{"Results":[]}}}`, "cannot be evaluated on it: no such key: metadata"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			judged(t, p, Facts{Level: LevelAttestations, Digest: dA, Attestations: [][]byte{dsse(t, release, dA, vuln, tc.predicate)}}, tc.problem)
		})
	}

	for _, bad := range []struct{ condition, want string }{
		{`{cel: "predicate.x =="}`, "spec.rules[0].attestations.conditions[0].cel: ERROR"},
		{`{cel: "size(subject)"}`, "spec.rules[0].attestations.conditions[0].cel: the expression yields int"},
		{`{cel: "true", path: predicate.x, equals: "z"}`, "spec.rules[0].attestations.conditions[0]: give either cel or path"},
	} {
		_, err := Parse([]byte(fmt.Sprintf(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  rules:
  - name: r
    attestations:
      predicateType: x
      authorities:
      - name: k
        key: |
          %s
      conditions:
      - %s
`, indent(release.pem), bad.condition)))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("condition %s: %v, want an error with %q", bad.condition, err, bad.want)
		}
	}
}

// TestSignatureEncodingsAsCosignVerifies: the encodings `cosign verify
// --key` accepts and refuses (test/e2e holds the real cosign to the same
// cases): an ECDSA signature as r‖s is one, RSA-PSS is not.
func TestSignatureEncodingsAsCosignVerifies(t *testing.T) {
	good := payloadFor(dA)
	for _, tc := range []struct {
		kind    string
		mangle  func([]byte) []byte
		problem string
	}{
		{"ecdsa", nil, ""},
		{"ecdsa-p1363", nil, ""},
		{"ecdsa-p1363", func(s []byte) []byte { return s[:63] }, "signed, but not by key"}, // odd length
		{"ecdsa-p1363", func(s []byte) []byte { s[40] ^= 1; return s }, "signed, but not by key"},
		{"rsa", nil, ""},
		{"rsa-pss", nil, "signed, but not by key"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			k := newSigner(t, tc.kind)
			p := mustParse(t, fmt.Sprintf(`  rules:
  - name: signed
    signatures:
      authorities:
      - name: k
        key: |
          %s
`, indent(k.pem)))
			sig := k.sign(good)
			if tc.mangle != nil {
				sig = tc.mangle(sig)
			}
			judged(t, p, Facts{Level: LevelSignatures, Digest: dA, Signatures: []Signature{{Payload: good, Signature: sig}}}, tc.problem)
		})
	}
}

// TestAttestationsEvery: with every: true, each attestation of the type an
// authority signed must meet the conditions (cosign verify-attestation
// --policy's rule); by default one is enough.
func TestAttestationsEvery(t *testing.T) {
	release, stranger := newSigner(t, "ecdsa"), newSigner(t, "ed25519")
	const slsa = "https://slsa.dev/provenance/v0.2"
	policyFor := func(every bool) *Policy {
		return mustParse(t, fmt.Sprintf(`  rules:
  - name: provenance
    attestations:
      predicateType: %s
      every: %t
      authorities:
      - name: release
        key: |
          %s
      conditions:
      - {path: predicate.builder.id, matches: "https://ci.corp/*"}
`, slsa, every, indent(release.pem)))
	}
	good := dsse(t, release, dA, slsa, `{"builder":{"id":"https://ci.corp/runner-7"}}`)
	bad := dsse(t, release, dA, slsa, `{"builder":{"id":"https://laptop/x"}}`)
	badByStranger := dsse(t, stranger, dA, slsa, `{"builder":{"id":"https://laptop/x"}}`)
	tests := []struct {
		name    string
		every   bool
		atts    [][]byte
		problem string
	}{
		{"one good, one bad: one is enough", false, [][]byte{bad, good}, ""},
		{"one good, one bad: every must", true, [][]byte{bad, good}, `not every one meets the rule's conditions (every: true): one predicate.builder.id is "https://laptop/x"`},
		{"every good", true, [][]byte{good, good}, ""},
		{"a bad one no authority signed does not count", true, [][]byte{good, badByStranger}, ""},
		{"only bad ones", true, [][]byte{bad}, `has an attestation of type "https://slsa.dev/provenance/v0.2", but predicate.builder.id is "https://laptop/x"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			judged(t, policyFor(tc.every), Facts{Level: LevelAttestations, Digest: dA, Attestations: tc.atts}, tc.problem)
		})
	}
}

// TestClassicKeylessSignatures judges signatures in cosign's classic
// keyless format (.sig layers carrying a certificate and a log entry), as
// registry.k8s.io publishes them, signed by a test authority and log.
func TestClassicKeylessSignatures(t *testing.T) {
	const issuer, subject = "https://accounts.google.com", "krel-trust@k8s-releng-prod.iam.gserviceaccount.com"
	auth := keylesstest.NewAuthority(t)
	p := mustParse(t, fmt.Sprintf(`  rules:
  - name: signed
    signatures:
      authorities:
      - name: k8s-release
        keyless:
          trustedRoot: |
            %s
          identities: [{issuer: %s, subject: %s}]
          transparencyLog: required
          ctLog: required
`, strings.ReplaceAll(string(auth.TrustedRoot), "\n", "\n            "), issuer, subject))
	longAgo := time.Now().Add(-5 * time.Hour)
	sig := func(payload []byte, subject string, logged bool) Signature {
		c := auth.Classic(t, payload, subject, issuer, longAgo, logged).Classic(t)
		return Signature{Payload: c.Payload, Signature: c.Signature, Certificate: c.Certificate, LogEntry: c.LogEntry, Timestamp: c.Timestamp}
	}
	good := sig(payloadFor(dA), subject, true)
	requires := `is signed, but not as keyless authority "k8s-release" requires (`
	tests := []struct {
		name    string
		sigs    []Signature
		problem string // empty: allowed
	}{
		{"signed and logged five hours ago", []Signature{good}, ""},
		{"not logged, the policy requires it", []Signature{sig(payloadFor(dA), subject, false)},
			requires + "carries no transparency-log entry, and the policy requires one)"},
		{"another identity", []Signature{sig(payloadFor(dA), "mallory@example.com", true)},
			requires + "certificate identity mallory@example.com (issuer https://accounts.google.com) is not allowed)"},
		{"for another digest", []Signature{sig(payloadFor(dB), subject, true)},
			requires + "signed by " + subject + " (issuer " + issuer + ") for another digest, not " + dA + ")"},
		{"over something else than a signing payload", []Signature{sig([]byte(`{"critical":{}}`), subject, true)},
			requires + "signed by " + subject + " (issuer " + issuer + ") over something that is not a cosign signature payload"},
		{"a good one after bad ones", []Signature{sig(payloadFor(dA), "mallory@example.com", true), sig(payloadFor(dB), subject, true), good}, ""},
		{"a key's signature is no keyless one", []Signature{{Payload: payloadFor(dA), Signature: newSigner(t, "ecdsa").sign(payloadFor(dA))}},
			requires + "no signature of this digest carries a certificate)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			judgedAt(t, p, Facts{Level: LevelSignatures, Digest: dA, Signatures: tc.sigs}, tc.problem, time.Now())
		})
	}
}

// TestNotationSignatures judges Notary Project signatures of a test
// authority (notationtest) as the resolver hands them over.
func TestNotationSignatures(t *testing.T) {
	now := time.Now()
	release := notationtest.NewSigner(t, "Corp", "release", now.Add(-time.Minute))
	stranger := notationtest.NewSigner(t, "Other", "release", now.Add(-time.Minute))
	const manifestType = "application/vnd.oci.image.manifest.v1+json"
	p := mustParse(t, fmt.Sprintf(`  rules:
  - name: signed
    signatures:
      authorities:
      - name: release
        notation:
          trustStore: |
            %s
          trustedIdentities: ["x509.subject: C=US, ST=WA, O=Corp, CN=release"]
`, strings.ReplaceAll(strings.TrimSpace(string(release.TrustStore)), "\n", "\n            ")))
	facts := func(sigs ...NotationSignature) Facts {
		return Facts{Level: LevelSignatures, Digest: dA, ManifestMediaType: manifestType, ManifestSize: 700, NotationSignatures: sigs}
	}
	jws := func(s *notationtest.Signer, digest string, size int64) NotationSignature {
		return NotationSignature{MediaType: "application/jose+json", Envelope: s.Sign(t, manifestType, digest, size, "application/jose+json")}
	}
	requires := `is signed, but not as Notation authority "release" requires (`
	tests := []struct {
		name    string
		facts   Facts
		problem string // empty: allowed
	}{
		{"signed by the trusted identity", facts(jws(release, dA, 700)), ""},
		{"COSE", facts(NotationSignature{MediaType: "application/cose", Envelope: release.Sign(t, manifestType, dA, 700, "application/cose")}), ""},
		{"unsigned", facts(), "has no signature (cosign's sha256-"},
		{"unsigned: the fix is notation's", facts(), "(notation sign registry.corp/app@" + dA + ")"},
		{"by a certificate the trust store does not hold", facts(jws(stranger, dA, 700)),
			requires + "signed by CN=release,O=Other,ST=WA,C=US: the signature's certificate chain does not contain any trusted certificate)"},
		{"of another digest", facts(jws(release, dB, 700)), requires + "signed by CN=release,O=Corp,ST=WA,C=US: content descriptor mismatch)"},
		{"of another size", facts(jws(release, dA, 701)), "content descriptor mismatch"},
		{"a good one after a bad one", facts(jws(stranger, dA, 700), jws(release, dA, 700)), ""},
		{"a cosign signature is no Notation one", Facts{Level: LevelSignatures, Digest: dA, Signatures: []Signature{{Payload: payloadFor(dA), Signature: []byte("x")}}},
			requires + "no Notation signature is attached to this digest)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			judgedAt(t, p, tc.facts, tc.problem, now)
		})
	}
	for decl, want := range map[string]string{
		"{name: a, notation: {trustStore: junk, trustedIdentities: ['*']}}":                  "notation: trustStore holds no PEM certificate",
		"{name: a, key: k, notation: {trustStore: x, trustedIdentities: ['*']}}":             "has notation and a key or keyless",
		"{name: a, notation: {trustStoreFile: /x, trustStore: z, trustedIdentities: ['*']}}": "not both",
	} {
		_, err := Parse([]byte("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  rules:\n  - name: s\n    signatures:\n      authorities: [" + decl + "]\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("authority %s: %v, want an error containing %q", decl, err, want)
		}
	}
	_, err := Parse([]byte("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nspec:\n  rules:\n  - name: s\n    attestations:\n      predicateType: x\n      authorities: [{name: a, notation: {trustStore: x, trustedIdentities: ['*']}}]\n"))
	if want := "Notation signs images, not in-toto attestations"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a Notation authority for attestations: %v, want an error containing %q", err, want)
	}
}
