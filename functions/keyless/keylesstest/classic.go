package keylesstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/admitfn/admitfn/functions/internal/testcert"
	"github.com/admitfn/admitfn/functions/keyless"
	jsoncanonicalizer "github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	"github.com/digitorus/timestamp"
	"github.com/sigstore/sigstore-go/pkg/root"
)

// SimpleSigningMediaType is the media type of a .sig layer.
const SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"

// Authority is a Fulcio-like certificate authority, a Rekor-like
// transparency log and a certificate-transparency log that sign as the
// public instance does, each valid a day either side of now so that a
// test can sign in the past, and the trusted_root.json that trusts them
// (TrustedRoot). It writes signatures in cosign's classic keyless format;
// its certificates carry an SCT of its CT log, as Fulcio's do.
type Authority struct {
	rootCert, intermediate *x509.Certificate
	intermediateKey        *ecdsa.PrivateKey
	logKey                 *ecdsa.PrivateKey
	logID                  []byte
	// sctBy is the CT log that signs the SCT embedded in a leaf; nil
	// for none.
	sctBy       *ecdsa.PrivateKey
	ctKey       *ecdsa.PrivateKey
	tsaLeaf     *x509.Certificate
	tsaKey      *ecdsa.PrivateKey
	TrustedRoot []byte
}

// WithoutSCT is a, issuing certificates with no SCT.
func (a *Authority) WithoutSCT() *Authority {
	c := *a
	c.sctBy = nil
	return &c
}

// WithSCTBy is a, issuing certificates whose SCT other's CT log signed.
func (a *Authority) WithSCTBy(other *Authority) *Authority {
	c := *a
	c.sctBy = other.ctKey
	return &c
}

// NewAuthority makes a root, an intermediate and a log key.
func NewAuthority(t testing.TB) *Authority {
	t.Helper()
	now := time.Now()
	rootKey, intermediateKey, logKey, ctKey, tsaRootKey, tsaKey := testcert.Key(t), testcert.Key(t), testcert.Key(t), testcert.Key(t), testcert.Key(t), testcert.Key(t)
	rootCert := testcert.Issue(t, &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sigstore-test-root"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}, nil, rootKey.Public(), rootKey)
	intermediate := testcert.Issue(t, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "sigstore-test-intermediate"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: 0, MaxPathLenZero: true,
	}, rootCert, intermediateKey.Public(), rootKey)
	// A timestamp authority: a root and the leaf that signs, its one
	// extended key usage time stamping, critical, as RFC 3161 wants.
	tsaRoot := testcert.Issue(t, &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "sigstore-test-tsa-root"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}, nil, tsaRootKey.Public(), tsaRootKey)
	timeStamping, err := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 8}})
	if err != nil {
		t.Fatal(err)
	}
	tsaLeaf := testcert.Issue(t, &x509.Certificate{
		SerialNumber: big.NewInt(4), Subject: pkix.Name{CommonName: "sigstore-test-tsa"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Critical: true, Value: timeStamping}},
	}, tsaRoot, tsaKey.Public(), tsaRootKey)
	a := &Authority{rootCert: rootCert, intermediate: intermediate, intermediateKey: intermediateKey,
		logKey: logKey, logID: keyID(t, logKey), ctKey: ctKey, sctBy: ctKey, tsaLeaf: tsaLeaf, tsaKey: tsaKey}
	tsa := &root.SigstoreTimestampingAuthority{Root: tsaRoot, Leaf: tsaLeaf, ValidityPeriodStart: tsaRoot.NotBefore, URI: "https://tsa.test"}
	ca := &root.FulcioCertificateAuthority{Root: rootCert, Intermediates: []*x509.Certificate{intermediate},
		ValidityPeriodStart: rootCert.NotBefore, URI: "https://fulcio.test"}
	logOf := func(url string, key *ecdsa.PrivateKey) map[string]*root.TransparencyLog {
		id := keyID(t, key)
		return map[string]*root.TransparencyLog{hex.EncodeToString(id): {
			BaseURL: url, ID: id, ValidityPeriodStart: rootCert.NotBefore,
			HashFunc: crypto.SHA256, PublicKey: key.Public(), SignatureHashFunc: crypto.SHA256,
		}}
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, []root.CertificateAuthority{ca}, logOf("https://ctfe.test", ctKey), []root.TimestampingAuthority{tsa}, logOf("https://rekor.test", logKey))
	if err != nil {
		t.Fatal(err)
	}
	if a.TrustedRoot, err = tr.MarshalJSON(); err != nil {
		t.Fatal(err)
	}
	return a
}

// ClassicSignature is one layer of a sha256-<hex>.sig tag as cosign
// writes a keyless signature: the payload and its annotations.
type ClassicSignature struct {
	Payload     []byte
	Annotations map[string]string
}

// Classic is s as admitfn's resolver reads it from the layer: the
// signature decoded, each keyless annotation as it is (nil when absent).
func (s ClassicSignature) Classic(t testing.TB) keyless.Classic {
	t.Helper()
	sig, err := base64.StdEncoding.DecodeString(s.Annotations["dev.cosignproject.cosign/signature"])
	if err != nil {
		t.Fatal(err)
	}
	c := keyless.Classic{Payload: s.Payload, Signature: sig}
	for key, dst := range map[string]*[]byte{"dev.sigstore.cosign/certificate": &c.Certificate,
		"dev.sigstore.cosign/bundle": &c.LogEntry, "dev.sigstore.cosign/rfc3161timestamp": &c.Timestamp} {
		if v, ok := s.Annotations[key]; ok {
			*dst = []byte(v)
		}
	}
	return c
}

// Classic has subject (an email, or a URI when it holds "://") from
// issuer sign payload with a certificate valid for ten minutes from at,
// as Fulcio issues them; logged adds the log entry made a minute after at
// and its signed entry timestamp, as cosign stores them.
func (a *Authority) Classic(t testing.TB, payload []byte, subject, issuer string, at time.Time, logged bool) ClassicSignature {
	t.Helper()
	key := testcert.Key(t)
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

// Stamped is s with the RFC 3161 timestamp a's timestamp authority
// gives its signature at when, in cosign's
// dev.sigstore.cosign/rfc3161timestamp annotation.
func (a *Authority) Stamped(t testing.TB, s ClassicSignature, when time.Time) ClassicSignature {
	t.Helper()
	sum := sha256.Sum256(s.Classic(t).Signature)
	resp, err := (&timestamp.Timestamp{HashAlgorithm: crypto.SHA256, HashedMessage: sum[:], Time: when,
		Policy: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 2}}).CreateResponseWithOpts(a.tsaLeaf, a.tsaKey, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := json.Marshal(map[string][]byte{"SignedRFC3161Timestamp": resp})
	if err != nil {
		t.Fatal(err)
	}
	out := ClassicSignature{Payload: s.Payload, Annotations: map[string]string{"dev.sigstore.cosign/rfc3161timestamp": string(ts)}}
	for k, v := range s.Annotations {
		out.Annotations[k] = v
	}
	return out
}

// Leaf is a Fulcio-like certificate for pub: subject in its SAN, issuer
// in both issuer extensions, valid ten minutes from at, with an embedded
// SCT (unless WithoutSCT).
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
	if a.sctBy == nil {
		return testcert.Issue(t, tmpl, a.intermediate, pub, a.intermediateKey)
	}
	// RFC 6962 §3.2: the log signs the certificate as it will be without
	// the SCT list (the precertificate's TBS, poison removed), with the
	// issuer's key hash; the verifier removes the list to check it.
	tbs := testcert.Issue(t, tmpl, a.intermediate, pub, a.intermediateKey).RawTBSCertificate
	tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11129, 2, 4, 2}, Value: a.sctList(t, tbs, at)})
	return testcert.Issue(t, tmpl, a.intermediate, pub, a.intermediateKey)
}

// sctList is the value of the SCT list extension: one SCT by a.sctBy over
// the precertificate tbs, at when, TLS-encoded in an OCTET STRING.
func (a *Authority) sctList(t testing.TB, tbs []byte, when time.Time) []byte {
	t.Helper()
	ms := uint64(when.UnixMilli())
	issuerKeyHash := sha256.Sum256(a.intermediate.RawSubjectPublicKeyInfo)
	// digitally-signed struct: version 1 (0), certificate_timestamp (0),
	// timestamp, precert_entry (1), issuer key hash, TBS<2^24-1>, no
	// extensions.
	signed := []byte{0, 0}
	signed = binary.BigEndian.AppendUint64(signed, ms)
	signed = append(signed, 0, 1)
	signed = append(signed, issuerKeyHash[:]...)
	signed = append(signed, byte(len(tbs)>>16), byte(len(tbs)>>8), byte(len(tbs)))
	signed = append(signed, tbs...)
	signed = append(signed, 0, 0)
	sum := sha256.Sum256(signed)
	sig, err := ecdsa.SignASN1(rand.Reader, a.sctBy, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	// SignedCertificateTimestamp: version, log ID, timestamp, no
	// extensions, SHA-256 (4) with ECDSA (3), signature<2^16-1>.
	sct := []byte{0}
	sct = append(sct, keyID(t, a.sctBy)...)
	sct = binary.BigEndian.AppendUint64(sct, ms)
	sct = append(sct, 0, 0, 4, 3)
	sct = binary.BigEndian.AppendUint16(sct, uint16(len(sig)))
	sct = append(sct, sig...)
	list := binary.BigEndian.AppendUint16(nil, uint16(len(sct)+2))
	list = binary.BigEndian.AppendUint16(list, uint16(len(sct)))
	list = append(list, sct...)
	value, err := asn1.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	return value
}

// keyID is a log's ID: the SHA-256 of its public key, PKIX DER.
func keyID(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(spki)
	return sum[:]
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
