// Package notation verifies Notary Project signatures (what the notation
// CLI, Azure's and AWS Signer's tooling and Harbor attach to images as
// OCI referrers of artifact type application/vnd.cncf.notary.signature)
// with notation-go, the Notary Project's own verifier, at verification
// level strict: the envelope's integrity, a certificate chain to the
// trust store, a signer among the trusted identities, the signature's
// expiry, the certificate's validity (at a trusted timestamp when the
// signature carries one) and revocation.
//
// Only what a policy gives is trusted: the trust store is the policy's
// certificates, never a directory on the node, and no plugin is run.
package notation

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	_ "github.com/notaryproject/notation-core-go/signature/cose" // registers the COSE envelope
	_ "github.com/notaryproject/notation-core-go/signature/jws"  // registers the JWS envelope

	"github.com/notaryproject/notation-core-go/revocation"
	"github.com/notaryproject/notation-core-go/revocation/purpose"
	notationgo "github.com/notaryproject/notation-go"
	"github.com/notaryproject/notation-go/verifier"
	"github.com/notaryproject/notation-go/verifier/trustpolicy"
	"github.com/notaryproject/notation-go/verifier/truststore"
	godigest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/admitfn/admitfn/functions/egress"
)

// ArtifactType is the artifact type of a Notation signature referrer.
const ArtifactType = "application/vnd.cncf.notary.signature"

// EnvelopeMediaTypes are the media types of the signature envelopes
// notation writes: the referrer's one layer.
var EnvelopeMediaTypes = []string{"application/jose+json", "application/cose"}

// Options are what an authority accepts.
type Options struct {
	// TrustStore holds the PEM certificates signatures must chain to
	// (notation's trust store of type ca).
	TrustStore []byte
	// TrustedIdentities are notation's: "x509.subject: <DN>" matched as
	// a subset of the signing certificate's subject, or "*" for anyone
	// the trust store vouches for.
	TrustedIdentities []string
}

// Authority verifies Notation signatures for one set of Options.
type Authority struct {
	v notationgo.Verifier
}

// storeName names the one trust store the policy's certificates form.
const storeName = "admitfn"

// New checks o and builds its verifier. Errors name what is wrong with
// the trust store or an identity.
func New(o Options) (*Authority, error) {
	var certs []*x509.Certificate
	rest := o.TrustStore
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("trustStore: %v", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("trustStore holds no PEM certificate")
	}
	if len(o.TrustedIdentities) == 0 {
		return nil, errors.New(`trustedIdentities is empty: list "x509.subject: <DN>" of each accepted signer, or "*"`)
	}
	doc := &trustpolicy.Document{
		Version: "1.0",
		TrustPolicies: []trustpolicy.TrustPolicy{{
			Name:                  "admitfn",
			RegistryScopes:        []string{"*"},
			SignatureVerification: trustpolicy.SignatureVerification{VerificationLevel: trustpolicy.LevelStrict.Name},
			TrustStores:           []string{string(truststore.TypeCA) + ":" + storeName},
			TrustedIdentities:     o.TrustedIdentities,
		}},
	}
	// Revocation is checked through the same egress guard as registry
	// lookups: OCSP and CRL endpoints named in a certificate are chosen
	// by whoever made it, and only public addresses are asked.
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: egress.DialContext(func(string) bool { return false }),
	}}
	codeSigning, err := revocation.NewWithOptions(revocation.Options{OCSPHTTPClient: client, CertChainPurpose: purpose.CodeSigning})
	if err != nil {
		return nil, err
	}
	timestamping, err := revocation.NewWithOptions(revocation.Options{OCSPHTTPClient: client, CertChainPurpose: purpose.Timestamping})
	if err != nil {
		return nil, err
	}
	v, err := verifier.NewWithOptions(doc, store{certs}, nil, verifier.VerifierOptions{
		RevocationCodeSigningValidator: codeSigning, RevocationTimestampingValidator: timestamping,
	})
	if err != nil {
		return nil, fmt.Errorf("trustedIdentities: %v", err)
	}
	return &Authority{v: v}, nil
}

// store is the policy's certificates as notation's trust store.
type store struct{ certs []*x509.Certificate }

func (s store) GetCertificates(_ context.Context, t truststore.Type, name string) ([]*x509.Certificate, error) {
	if t != truststore.TypeCA || name != storeName {
		return nil, fmt.Errorf("no trust store %s:%s", t, name)
	}
	return s.certs, nil
}

var _ truststore.X509TrustStore = store{}

// Target is the manifest a signature must name: notation signs the
// manifest's descriptor, all three of its fields.
type Target struct {
	// Ref is the repository, fully qualified ("registry.corp/app").
	Repo      string
	Digest    string
	MediaType string
	Size      int64
}

// Verdict is Verify's answer.
type Verdict struct {
	// Who signed: the signing certificate's subject, once the envelope
	// is readable.
	Who string
	// Err says why the signature is not accepted; nil when it is.
	Err error
	// Until is when the verdict should be reached again: the signing
	// certificate's expiry for an accepted signature (notation judges at
	// the wall clock), a minute for a refused one.
	Until time.Time
}

// Verify checks envelope (of mediaType) as a signature of target.
func (a *Authority) Verify(ctx context.Context, target Target, mediaType string, envelope []byte, now time.Time) Verdict {
	desc := ocispec.Descriptor{MediaType: target.MediaType, Digest: godigest.Digest(target.Digest), Size: target.Size}
	outcome, err := a.v.Verify(ctx, desc, envelope, notationgo.VerifierVerifyOptions{
		ArtifactReference:  target.Repo + "@" + target.Digest,
		SignatureMediaType: mediaType,
	})
	v := Verdict{Until: now.Add(time.Minute)}
	if outcome != nil && outcome.EnvelopeContent != nil && len(outcome.EnvelopeContent.SignerInfo.CertificateChain) > 0 {
		leaf := outcome.EnvelopeContent.SignerInfo.CertificateChain[0]
		v.Who = leaf.Subject.String()
		if err == nil {
			v.Until = leaf.NotAfter
		}
	}
	if err != nil {
		v.Err = errors.New(reason(err))
	}
	return v
}

// reason is notation's error in fewer words: its messages name the
// trust policy, which here is admitfn's own and means nothing to a
// reader.
func reason(err error) string {
	msg := err.Error()
	msg = strings.ReplaceAll(msg, `trust policy statement "admitfn"`, "the authority")
	if errors.Is(err, context.DeadlineExceeded) {
		return "revocation could not be checked in time: " + msg
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return "revocation could not be checked: " + msg
	}
	return msg
}
