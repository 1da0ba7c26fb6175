// Package keyless verifies sigstore bundles signed without a long-lived
// key: a short-lived certificate for an OIDC identity, chained to a
// certificate authority of a sigstore trusted root (trusted_root.json),
// optionally with a transparency-log entry that proves when it was used.
//
// It wraps sigstore-go's verifier, the one sigstore maintains (cosign's
// own packages pull in far more), and turns its outcome into the reasons
// admitfn's policy gives: which identity signed, and why it is not
// accepted.
package keyless

import (
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// Identity is an accepted signer: the OIDC issuer of its certificate and
// its subject (the certificate's SAN: an email, a workflow URI), each
// given exactly or as a regular expression matched in full.
type Identity struct {
	Issuer        string
	IssuerRegExp  string
	Subject       string
	SubjectRegExp string
}

// Options are what an authority accepts.
type Options struct {
	// TrustedRoot is a sigstore trusted_root.json.
	TrustedRoot []byte
	// Identities are the accepted signers (any one).
	Identities []Identity
	// TransparencyLog requires a log entry, verified against the trusted
	// root's logs, whose time also establishes that the certificate was
	// valid when it signed. Without it a signature counts only while its
	// certificate is valid now (Fulcio's last ten minutes).
	TransparencyLog bool
	// CTLog requires the certificate to carry a signed certificate
	// timestamp from a certificate-transparency log of the trusted root
	// (as Fulcio embeds them): proof the certificate was published, so a
	// certificate authority cannot issue one in secret. cosign requires it
	// unless told --insecure-ignore-sct.
	CTLog bool
}

// Authority verifies bundles for one set of Options.
type Authority struct {
	// verifier is built once when a log entry is required: its times
	// come from the log. Without one, each Verify builds its own on the
	// time it is given.
	verifier *verify.Verifier
	// stamped verifies a signature that carries an RFC 3161 timestamp,
	// when the trusted root lists a timestamp authority: the certificate
	// is judged at the timestamp's time (and at the log entry's too when
	// one is required). Nil when the root lists none.
	stamped    *verify.Verifier
	trusted    root.TrustedMaterial
	identities []matcher
	tlog       bool
	// sct is the verifier option that requires an SCT, when required.
	sct []verify.VerifierOption
}

type matcher struct{ issuer, subject func(string) bool }

// New compiles o. Errors name what is wrong in the trusted root or an
// identity.
func New(o Options) (*Authority, error) {
	trusted, err := root.NewTrustedRootFromJSON(o.TrustedRoot)
	if err != nil {
		return nil, fmt.Errorf("trustedRoot is not a sigstore trusted root: %v", err)
	}
	if len(trusted.FulcioCertificateAuthorities()) == 0 {
		return nil, errors.New("trustedRoot lists no certificate authority")
	}
	a := &Authority{trusted: trusted, tlog: o.TransparencyLog}
	if o.CTLog {
		if len(trusted.CTLogs()) == 0 {
			return nil, errors.New("ctLog is required but trustedRoot lists no certificate-transparency log")
		}
		a.sct = []verify.VerifierOption{verify.WithSignedCertificateTimestamps(1)}
	}
	if o.TransparencyLog {
		if len(trusted.RekorLogs()) == 0 {
			return nil, errors.New("transparencyLog is required but trustedRoot lists no transparency log")
		}
		v, err := verify.NewVerifier(trusted, append([]verify.VerifierOption{verify.WithTransparencyLog(1), verify.WithIntegratedTimestamps(1)}, a.sct...)...)
		if err != nil {
			return nil, err
		}
		a.verifier = v
	} else if _, err := a.verifierAt(time.Time{}); err != nil {
		return nil, err
	}
	if len(trusted.TimestampingAuthorities()) > 0 {
		opts := []verify.VerifierOption{verify.WithSignedTimestamps(1)}
		if o.TransparencyLog {
			opts = append(opts, verify.WithTransparencyLog(1), verify.WithIntegratedTimestamps(1))
		}
		v, err := verify.NewVerifier(trusted, append(opts, a.sct...)...)
		if err != nil {
			return nil, err
		}
		a.stamped = v
	}
	if len(o.Identities) == 0 {
		return nil, errors.New("identities is empty: list the issuer and subject of each accepted signer")
	}
	for i, id := range o.Identities {
		issuer, err := match(id.Issuer, id.IssuerRegExp)
		if err != nil {
			return nil, fmt.Errorf("identities[%d]: issuer: %v", i, err)
		}
		subject, err := match(id.Subject, id.SubjectRegExp)
		if err != nil {
			return nil, fmt.Errorf("identities[%d]: subject: %v", i, err)
		}
		a.identities = append(a.identities, matcher{issuer, subject})
	}
	return a, nil
}

// match is an exact value or a regular expression matched in full; one of
// them, not both.
func match(exact, expr string) (func(string) bool, error) {
	switch {
	case exact != "" && expr != "":
		return nil, errors.New("give the value or a regular expression, not both")
	case exact != "":
		return func(s string) bool { return s == exact }, nil
	case expr != "":
		re, err := regexp.Compile("^(?:" + expr + ")$")
		if err != nil {
			return nil, err
		}
		return re.MatchString, nil
	}
	return nil, errors.New("is empty")
}

// verifierAt is a verifier that checks certificates at now: sigstore-go
// reads the wall clock for "the current time", so the certificate
// authorities it is given are wrapped to check at now instead.
func (a *Authority) verifierAt(now time.Time) (*verify.Verifier, error) {
	return verify.NewVerifier(clockedRoot{TrustedMaterial: a.trusted, now: now}, append([]verify.VerifierOption{verify.WithCurrentTime()}, a.sct...)...)
}

// Forever is the Until of a verdict that time does not change.
var Forever = time.Time{}

// Verdict is Verify's answer and how long it holds.
type Verdict struct {
	// Who signed, "subject (issuer)", when the bundle verifies.
	Who string
	// Err is what is wrong with the bundle, in words for a person; nil
	// when it verifies.
	Err error
	// Until is the instant the verdict stops being true (Forever when
	// time does not change it): with a log entry or a timestamp, the
	// certificate is judged at their time, which does not move; without
	// either, at now, so a verdict holds only while the certificate stays
	// valid, or not yet valid.
	Until time.Time
}

// Verify checks, at now, that bundleJSON is a valid signature over digest
// ("sha256:<hex>") by an accepted identity.
func (a *Authority) Verify(bundleJSON []byte, digest string, now time.Time) Verdict {
	algo, hexDigest, _ := strings.Cut(digest, ":")
	sum, err := hex.DecodeString(hexDigest)
	if err != nil || algo == "" {
		return Verdict{Err: fmt.Errorf("digest %q is not ALGORITHM:HEX", digest)}
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(bundleJSON); err != nil {
		return Verdict{Err: fmt.Errorf("is not a sigstore bundle: %v", err)}
	}
	return a.verify(&b, verify.WithArtifactDigest(algo, sum), now)
}

// verify checks b over the artifact at now and matches its signer to
// the accepted identities.
func (a *Authority) verify(b *bundle.Bundle, artifact verify.ArtifactPolicyOption, now time.Time) Verdict {
	v, until := a.verifier, Forever
	if a.tlog {
		if entries, err := b.TlogEntries(); err != nil || len(entries) == 0 {
			return Verdict{Err: errors.New("carries no transparency-log entry, and the policy requires one")}
		}
	}
	// A timestamp of an authority the root trusts says when the
	// certificate signed, as cosign verify --use-signed-timestamps takes
	// it: one that does not verify is a refusal, not a reason to fall
	// back on now.
	if stamps, err := b.Timestamps(); err == nil && len(stamps) > 0 && a.stamped != nil {
		v = a.stamped
	} else if !a.tlog {
		var err error
		if v, err = a.verifierAt(now); err != nil {
			return Verdict{Err: err}
		}
		if content, err := b.VerificationContent(); err == nil && content.Certificate() != nil {
			until = validityEdge(content.Certificate(), now)
		}
	}
	// Identities are matched here rather than by sigstore-go, so the
	// reason can name the identity that signed.
	res, err := v.Verify(b, verify.NewPolicy(artifact, verify.WithoutIdentitiesUnsafe()))
	if err != nil {
		return Verdict{Err: fmt.Errorf("does not verify: %v", err), Until: until}
	}
	if res.Signature == nil || res.Signature.Certificate == nil {
		return Verdict{Err: errors.New("is signed by a key, not a certificate")}
	}
	subject, issuer := res.Signature.Certificate.SubjectAlternativeName, res.Signature.Certificate.Extensions.Issuer
	who := fmt.Sprintf("%s (issuer %s)", subject, issuer)
	for _, m := range a.identities {
		if m.issuer(issuer) && m.subject(subject) {
			return Verdict{Who: who, Until: until}
		}
	}
	return Verdict{Err: fmt.Errorf("certificate identity %s is not allowed", who)}
}

// validityEdge is the next instant after now at which cert's validity
// changes: its NotBefore if it is not valid yet, its NotAfter while it is
// valid, and never once it has expired.
func validityEdge(cert *x509.Certificate, now time.Time) time.Time {
	switch {
	case now.Before(cert.NotBefore):
		return cert.NotBefore
	case !now.After(cert.NotAfter):
		return cert.NotAfter.Add(time.Nanosecond)
	}
	return Forever
}

// clockedRoot is trusted material whose certificate authorities check
// certificates at now, whatever time sigstore-go asks for. It is used
// only with verify.WithCurrentTime and no other time source, so the one
// time it replaces is the wall clock's.
type clockedRoot struct {
	root.TrustedMaterial
	now time.Time
}

func (c clockedRoot) FulcioCertificateAuthorities() []root.CertificateAuthority {
	cas := c.TrustedMaterial.FulcioCertificateAuthorities()
	out := make([]root.CertificateAuthority, len(cas))
	for i, ca := range cas {
		out[i] = clockedCA{ca, c.now}
	}
	return out
}

type clockedCA struct {
	root.CertificateAuthority
	now time.Time
}

func (c clockedCA) Verify(cert *x509.Certificate, _ time.Time) ([][]*x509.Certificate, error) {
	return c.CertificateAuthority.Verify(cert, c.now)
}
