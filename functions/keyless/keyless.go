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
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

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
}

// Authority verifies bundles for one set of Options.
type Authority struct {
	verifier   *verify.Verifier
	identities []matcher
	tlog       bool
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
	opts := []verify.VerifierOption{verify.WithCurrentTime()}
	if o.TransparencyLog {
		if len(trusted.RekorLogs()) == 0 {
			return nil, errors.New("transparencyLog is required but trustedRoot lists no transparency log")
		}
		opts = []verify.VerifierOption{verify.WithTransparencyLog(1), verify.WithIntegratedTimestamps(1)}
	}
	v, err := verify.NewVerifier(trusted, opts...)
	if err != nil {
		return nil, err
	}
	if len(o.Identities) == 0 {
		return nil, errors.New("identities is empty: list the issuer and subject of each accepted signer")
	}
	a := &Authority{verifier: v, tlog: o.TransparencyLog}
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

// Verify checks that bundleJSON is a valid signature over digest
// ("sha256:<hex>") by an accepted identity, and returns that identity as
// "subject (issuer)". Its error is a reason for a person: what is wrong
// with this bundle.
func (a *Authority) Verify(bundleJSON []byte, digest string) (string, error) {
	algo, hexDigest, _ := strings.Cut(digest, ":")
	sum, err := hex.DecodeString(hexDigest)
	if err != nil || algo == "" {
		return "", fmt.Errorf("digest %q is not ALGORITHM:HEX", digest)
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(bundleJSON); err != nil {
		return "", fmt.Errorf("is not a sigstore bundle: %v", err)
	}
	if a.tlog {
		if entries, err := b.TlogEntries(); err != nil || len(entries) == 0 {
			return "", errors.New("carries no transparency-log entry, and the policy requires one")
		}
	}
	// Identities are matched here rather than by sigstore-go, so the
	// reason can name the identity that signed.
	res, err := a.verifier.Verify(&b, verify.NewPolicy(verify.WithArtifactDigest(algo, sum), verify.WithoutIdentitiesUnsafe()))
	if err != nil {
		return "", fmt.Errorf("does not verify: %v", err)
	}
	if res.Signature == nil || res.Signature.Certificate == nil {
		return "", errors.New("is signed by a key, not a certificate")
	}
	subject, issuer := res.Signature.Certificate.SubjectAlternativeName, res.Signature.Certificate.Extensions.Issuer
	who := fmt.Sprintf("%s (issuer %s)", subject, issuer)
	for _, m := range a.identities {
		if m.issuer(issuer) && m.subject(subject) {
			return who, nil
		}
	}
	return "", fmt.Errorf("certificate identity %s is not allowed", who)
}
