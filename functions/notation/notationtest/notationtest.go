// Package notationtest makes Notary Project signatures for tests, as
// notation sign does with a local key: a root certificate authority (the
// trust store) and a code-signing leaf under it.
package notationtest

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/admitfn/admitfn/functions/internal/testcert"
	notationgo "github.com/notaryproject/notation-go"
	"github.com/notaryproject/notation-go/signer"
	godigest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Signer signs as one identity of one certificate authority.
type Signer struct {
	// TrustStore is the authority's root, PEM.
	TrustStore []byte
	// Subject is the leaf's subject, as a trusted identity names it
	// ("x509.subject: " + Subject).
	Subject string
	signer  notationgo.Signer
}

// NewSigner makes a root and a leaf for subject C=US, ST=WA, O=<org>,
// CN=<cn> (notation wants C, ST and O in a trusted identity), valid from
// notBefore for an hour.
func NewSigner(t testing.TB, org, cn string, notBefore time.Time) *Signer {
	t.Helper()
	rootKey, leafKey := testcert.Key(t), testcert.Key(t)
	root := testcert.Issue(t, &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{org}, CommonName: org + " root"},
		NotBefore: notBefore.Add(-time.Hour), NotAfter: notBefore.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}, nil, &rootKey.PublicKey, rootKey)
	leaf := testcert.Issue(t, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{Country: []string{"US"}, Province: []string{"WA"}, Organization: []string{org}, CommonName: cn},
		NotBefore: notBefore, NotAfter: notBefore.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		BasicConstraintsValid: true,
	}, root, &leafKey.PublicKey, rootKey)
	s, err := signer.NewGenericSigner(leafKey, []*x509.Certificate{leaf, root})
	if err != nil {
		t.Fatal(err)
	}
	return &Signer{
		TrustStore: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}),
		Subject:    leaf.Subject.String(),
		signer:     s,
	}
}

// Sign signs the manifest (mediaType, digest, size) in an envelope of
// envelopeType (application/jose+json or application/cose).
func (s *Signer) Sign(t testing.TB, mediaType, digest string, size int64, envelopeType string) []byte {
	t.Helper()
	return s.SignExpiring(t, mediaType, digest, size, envelopeType, 0)
}

// SignExpiring is Sign with a signature that expires after expiry
// (notation sign --expiry); zero for never.
func (s *Signer) SignExpiring(t testing.TB, mediaType, digest string, size int64, envelopeType string, expiry time.Duration) []byte {
	t.Helper()
	sig, _, err := s.signer.Sign(context.Background(), ocispec.Descriptor{MediaType: mediaType, Digest: godigest.Digest(digest), Size: size},
		notationgo.SignerSignOptions{SignatureMediaType: envelopeType, ExpiryDuration: expiry})
	if err != nil {
		t.Fatal(err)
	}
	return sig
}
