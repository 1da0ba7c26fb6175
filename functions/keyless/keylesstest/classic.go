package keylesstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	jsoncanonicalizer "github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	"github.com/sigstore/sigstore-go/pkg/root"
)

// SimpleSigningMediaType is the media type of a .sig layer.
const SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"

// Authority is a Fulcio-like certificate authority and a Rekor-like
// transparency log that sign as the public instance does, each valid a
// day either side of now so that a test can sign in the past, and the
// trusted_root.json that trusts them (TrustedRoot). It writes signatures
// in cosign's classic keyless format.
type Authority struct {
	rootCert, intermediate *x509.Certificate
	intermediateKey        *ecdsa.PrivateKey
	logKey                 *ecdsa.PrivateKey
	logID                  []byte
	TrustedRoot            []byte
}

// NewAuthority makes a root, an intermediate and a log key.
func NewAuthority(t testing.TB) *Authority {
	t.Helper()
	now := time.Now()
	rootKey, intermediateKey, logKey := newKey(t), newKey(t), newKey(t)
	rootCert := certificate(t, &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sigstore-test-root"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}, nil, rootKey.Public(), rootKey)
	intermediate := certificate(t, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "sigstore-test-intermediate"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: 0, MaxPathLenZero: true,
	}, rootCert, intermediateKey.Public(), rootKey)
	spki, err := x509.MarshalPKIXPublicKey(logKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(spki)
	a := &Authority{rootCert: rootCert, intermediate: intermediate, intermediateKey: intermediateKey, logKey: logKey, logID: sum[:]}
	ca := &root.FulcioCertificateAuthority{Root: rootCert, Intermediates: []*x509.Certificate{intermediate},
		ValidityPeriodStart: rootCert.NotBefore, URI: "https://fulcio.test"}
	logs := map[string]*root.TransparencyLog{hex.EncodeToString(a.logID): {
		BaseURL: "https://rekor.test", ID: a.logID, ValidityPeriodStart: rootCert.NotBefore,
		HashFunc: crypto.SHA256, PublicKey: logKey.Public(), SignatureHashFunc: crypto.SHA256,
	}}
	a.TrustedRoot = trustedRoot(t, []root.CertificateAuthority{ca}, logs)
	return a
}

// ClassicSignature is one layer of a sha256-<hex>.sig tag as cosign
// writes a keyless signature: the payload and its annotations.
type ClassicSignature struct {
	Payload     []byte
	Annotations map[string]string
}

// Classic has subject (an email, or a URI when it holds "://") from
// issuer sign payload with a certificate valid for ten minutes from at,
// as Fulcio issues them; logged adds the log entry made a minute after at
// and its signed entry timestamp, as cosign stores them.
func (a *Authority) Classic(t testing.TB, payload []byte, subject, issuer string, at time.Time, logged bool) ClassicSignature {
	t.Helper()
	key := newKey(t)
	leaf := a.Leaf(t, key.Public(), subject, issuer, at)
	sum := sha256.Sum256(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})
	s := ClassicSignature{Payload: payload, Annotations: map[string]string{
		"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(sig),
		"dev.sigstore.cosign/certificate":    string(certPEM),
		"dev.sigstore.cosign/chain":          string(a.ChainPEM()),
	}}
	if logged {
		s.Annotations["dev.sigstore.cosign/bundle"] = string(a.LogEntry(t, sum[:], sig, certPEM, at.Add(time.Minute), 1))
	}
	return s
}

// Leaf is a Fulcio-like certificate for pub: subject in its SAN, issuer
// in both issuer extensions, valid ten minutes from at.
func (a *Authority) Leaf(t testing.TB, pub crypto.PublicKey, subject, issuer string, at time.Time) *x509.Certificate {
	t.Helper()
	issuerV2, err := asn1.MarshalWithParams(issuer, "utf8")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(at.UnixNano()), NotBefore: at, NotAfter: at.Add(10 * time.Minute),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}, Value: []byte(issuer)},
			{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}, Value: issuerV2},
		},
	}
	if strings.Contains(subject, "://") {
		u, err := url.Parse(subject)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	} else {
		tmpl.EmailAddresses = []string{subject}
	}
	return certificate(t, tmpl, a.intermediate, pub, a.intermediateKey)
}

// LogEntry is cosign's dev.sigstore.cosign/bundle annotation for a
// hashedrekord entry of (sha256 payload digest, sig, certificate),
// integrated at when with index, signed by the log.
func (a *Authority) LogEntry(t testing.TB, digest, sig, certPEM []byte, when time.Time, index int64) []byte {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"apiVersion": "0.0.1", "kind": "hashedrekord",
		"spec": map[string]any{
			"data":      map[string]any{"hash": map[string]string{"algorithm": "sha256", "value": hex.EncodeToString(digest)}},
			"signature": map[string]any{"content": base64.StdEncoding.EncodeToString(sig), "publicKey": map[string]string{"content": base64.StdEncoding.EncodeToString(certPEM)}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	payload := map[string]any{"body": base64.StdEncoding.EncodeToString(body), "integratedTime": when.Unix(), "logIndex": index, "logID": hex.EncodeToString(a.logID)}
	set := a.signLog(t, payload)
	out, err := json.Marshal(map[string]any{"SignedEntryTimestamp": set, "Payload": payload})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// signLog is the log's signature over the canonical JSON of v.
func (a *Authority) signLog(t testing.TB, v any) []byte {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	canonical, err := jsoncanonicalizer.Transform(raw)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(canonical)
	sig, err := ecdsa.SignASN1(rand.Reader, a.logKey, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// ChainPEM is the intermediate and the root, PEM, as cosign stores a
// certificate's chain (and takes it: cosign sign --certificate-chain).
func (a *Authority) ChainPEM() []byte {
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.intermediate.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.rootCert.Raw})...)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func certificate(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
