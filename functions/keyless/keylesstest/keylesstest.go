// Package keylesstest makes keyless signatures for tests: sigstore bundles
// whose certificates chain to a test certificate authority, with or
// without an entry in a test transparency log, and the trusted_root.json
// that trusts them. The log is sigstore-go's virtual Sigstore.
package keylesstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"google.golang.org/protobuf/encoding/protojson"
)

// SignPredicate is the predicate type of the statement cosign signs in a
// bundle (cosign sign --new-bundle-format).
const SignPredicate = "https://sigstore.dev/cosign/sign/v1"

// Statement is an in-toto v1 statement of predicateType about digest
// ("sha256:<hex>").
func Statement(digest, predicateType, predicate string) []byte {
	algo, h, _ := strings.Cut(digest, ":")
	return []byte(fmt.Sprintf(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"image","digest":{%q:%q}}],"predicateType":%q,"predicate":%s}`, algo, h, predicateType, predicate))
}

// CA is a certificate authority with no transparency log.
type CA struct {
	root, intermediate *x509.Certificate
	key                crypto.Signer
	// TrustedRoot trusts the CA.
	TrustedRoot []byte
}

// NewCA makes a root and a Fulcio-like intermediate.
func NewCA(t testing.TB) *CA {
	t.Helper()
	rootCert, rootKey, err := ca.GenerateRootCa()
	if err != nil {
		t.Fatal(err)
	}
	inter, interKey, err := ca.GenerateFulcioIntermediate(rootCert, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	c := &CA{root: rootCert, intermediate: inter, key: interKey}
	authority := &root.FulcioCertificateAuthority{Root: rootCert, Intermediates: []*x509.Certificate{inter},
		ValidityPeriodStart: rootCert.NotBefore, URI: "https://fulcio.test"}
	c.TrustedRoot = trustedRoot(t, []root.CertificateAuthority{authority}, nil)
	return c
}

// Bundle signs statement with a certificate for subject from issuer,
// valid for ten minutes from notBefore.
func (c *CA) Bundle(t testing.TB, statement []byte, subject, issuer string, notBefore time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.GenerateLeafCert(subject, issuer, notBefore, key, c.intermediate, c.key)
	if err != nil {
		t.Fatal(err)
	}
	pae := []byte(fmt.Sprintf("DSSEv1 %d %s %d %s", len("application/vnd.in-toto+json"), "application/vnd.in-toto+json", len(statement), statement))
	sum := sha256.Sum256(pae)
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return marshal(t, leaf, statement, sig, nil)
}

// Log is a certificate authority and a transparency log.
type Log struct {
	vs *ca.VirtualSigstore
	// TrustedRoot trusts both.
	TrustedRoot []byte
}

// NewLog starts a virtual Sigstore.
func NewLog(t testing.TB) *Log {
	t.Helper()
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	// The virtual log names itself by the hex of its key ID as bytes;
	// entries carry the key ID itself, which is what a trusted root holds.
	logs := map[string]*root.TransparencyLog{}
	for id, l := range vs.RekorLogs() {
		c := *l
		if c.ID, err = hex.DecodeString(id); err != nil {
			t.Fatal(err)
		}
		logs[id] = &c
	}
	return &Log{vs: vs, TrustedRoot: trustedRoot(t, vs.FulcioCertificateAuthorities(), logs)}
}

// Bundle signs statement for subject from issuer now; withEntry adds its
// log entry (with inclusion promise and proof).
func (l *Log) Bundle(t testing.TB, statement []byte, subject, issuer string, withEntry bool) []byte {
	t.Helper()
	e, err := l.vs.AttestAtTime(subject, issuer, statement, time.Now(), true)
	if err != nil {
		t.Fatal(err)
	}
	vc, err := e.VerificationContent()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := e.SignatureContent()
	if err != nil {
		t.Fatal(err)
	}
	env := sc.(*bundle.Envelope).RawEnvelope()
	sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err != nil {
		t.Fatal(err)
	}
	var entries []*protorekor.TransparencyLogEntry
	if withEntry {
		tles, err := e.TlogEntries()
		if err != nil {
			t.Fatal(err)
		}
		for _, te := range tles {
			p := te.TransparencyLogEntry()
			var kv struct{ Kind, APIVersion string }
			if err := json.Unmarshal(p.CanonicalizedBody, &kv); err != nil {
				t.Fatal(err)
			}
			p.KindVersion = &protorekor.KindVersion{Kind: kv.Kind, Version: kv.APIVersion}
			set, err := l.vs.RekorSignPayload(tlog.RekorPayload{Body: base64.StdEncoding.EncodeToString(p.CanonicalizedBody),
				IntegratedTime: p.IntegratedTime, LogIndex: p.LogIndex, LogID: hex.EncodeToString(p.LogId.KeyId)})
			if err != nil {
				t.Fatal(err)
			}
			p.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
			entries = append(entries, p)
		}
	}
	return marshal(t, vc.Certificate(), statement, sig, entries)
}

func marshal(t testing.TB, leaf *x509.Certificate, statement, sig []byte, entries []*protorekor.TransparencyLogEntry) []byte {
	t.Helper()
	b, err := protojson.Marshal(&protobundle.Bundle{
		MediaType: "application/vnd.dev.sigstore.bundle.v0.3+json",
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content:     &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: leaf.Raw}},
			TlogEntries: entries,
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: statement, PayloadType: "application/vnd.in-toto+json", Signatures: []*protodsse.Signature{{Sig: sig}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func trustedRoot(t testing.TB, cas []root.CertificateAuthority, logs map[string]*root.TransparencyLog) []byte {
	t.Helper()
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, cas, nil, nil, logs)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tr.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
