package keyless

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// Classic is a signature in cosign's classic keyless format: a layer of
// the image's sha256-<hex>.sig tag whose annotations carry, beside the
// signature, the signer's certificate, the transparency-log entry cosign
// got for it and an RFC 3161 timestamp. This is how registry.k8s.io,
// distroless and most keyless-signed images are signed.
type Classic struct {
	// Payload is the layer: the simple-signing document that was signed.
	Payload []byte
	// Signature is over Payload (dev.cosignproject.cosign/signature).
	Signature []byte
	// Certificate is PEM (dev.sigstore.cosign/certificate).
	Certificate []byte
	// LogEntry is dev.sigstore.cosign/bundle: the log entry's body,
	// integrated time, index and log ID, and the log's signed entry
	// timestamp over them. Nil when the signature was not logged.
	LogEntry []byte
	// Timestamp is dev.sigstore.cosign/rfc3161timestamp, nil when none.
	Timestamp []byte
}

// VerifyClassic checks, at now, that c is a valid signature over its
// payload by an accepted identity. It does not read the payload: which
// image it names is the caller's to check, as for a key's signature.
//
// The signature is turned into the sigstore bundle that carries the same
// facts (a version 0.1 bundle: a message signature, the certificate, the
// log entry with its promise of inclusion) and verified as a bundle is,
// so both formats are judged by one verifier.
func (a *Authority) VerifyClassic(c Classic, now time.Time) Verdict {
	b, err := classicBundle(c)
	if err != nil {
		return Verdict{Err: err}
	}
	return a.verify(b, verify.WithArtifact(bytes.NewReader(c.Payload)), now)
}

func classicBundle(c Classic) (*bundle.Bundle, error) {
	block, _ := pem.Decode(c.Certificate)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("its certificate annotation holds no PEM certificate")
	}
	sum := sha256.Sum256(c.Payload)
	material := &protobundle.VerificationMaterial{
		Content: &protobundle.VerificationMaterial_X509CertificateChain{X509CertificateChain: &protocommon.X509CertificateChain{
			Certificates: []*protocommon.X509Certificate{{RawBytes: block.Bytes}},
		}},
	}
	if c.LogEntry != nil {
		entry, err := classicLogEntry(c.LogEntry)
		if err != nil {
			return nil, err
		}
		material.TlogEntries = []*protorekor.TransparencyLogEntry{entry}
	}
	if c.Timestamp != nil {
		var ts struct {
			SignedRFC3161Timestamp []byte
		}
		if err := json.Unmarshal(c.Timestamp, &ts); err != nil || len(ts.SignedRFC3161Timestamp) == 0 {
			return nil, errors.New("its RFC 3161 timestamp annotation is not cosign's {\"SignedRFC3161Timestamp\": …}")
		}
		material.TimestampVerificationData = &protobundle.TimestampVerificationData{
			Rfc3161Timestamps: []*protocommon.RFC3161SignedTimestamp{{SignedTimestamp: ts.SignedRFC3161Timestamp}},
		}
	}
	b, err := bundle.NewBundle(&protobundle.Bundle{
		MediaType:            "application/vnd.dev.sigstore.bundle+json;version=0.1",
		VerificationMaterial: material,
		Content: &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
			MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: sum[:]},
			Signature:     c.Signature,
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("cannot be read as a signature: %v", err)
	}
	return b, nil
}

// classicLogEntry reads cosign's dev.sigstore.cosign/bundle annotation:
// {"SignedEntryTimestamp": base64, "Payload": {"body": base64,
// "integratedTime": unix, "logIndex": n, "logID": hex}}, the signed
// entry timestamp being the log's signature over Payload.
func classicLogEntry(annotation []byte) (*protorekor.TransparencyLogEntry, error) {
	var rb struct {
		SignedEntryTimestamp []byte
		Payload              struct {
			Body           string `json:"body"`
			IntegratedTime int64  `json:"integratedTime"`
			LogIndex       int64  `json:"logIndex"`
			LogID          string `json:"logID"`
		}
	}
	bad := func(what string) error {
		return fmt.Errorf("its transparency-log annotation is not a log entry: %s", what)
	}
	if err := json.Unmarshal(annotation, &rb); err != nil {
		return nil, bad(err.Error())
	}
	body, err := base64.StdEncoding.DecodeString(rb.Payload.Body)
	if err != nil {
		return nil, bad("its body is not base64")
	}
	logID, err := hex.DecodeString(rb.Payload.LogID)
	if err != nil || len(logID) == 0 {
		return nil, bad("its logID is not hex")
	}
	if len(rb.SignedEntryTimestamp) == 0 {
		return nil, bad("it has no SignedEntryTimestamp")
	}
	var kind struct {
		Kind       string `json:"kind"`
		APIVersion string `json:"apiVersion"`
	}
	if err := json.Unmarshal(body, &kind); err != nil || kind.Kind == "" || kind.APIVersion == "" {
		return nil, bad("its body names no kind and apiVersion")
	}
	return &protorekor.TransparencyLogEntry{
		LogIndex:          rb.Payload.LogIndex,
		LogId:             &protocommon.LogId{KeyId: logID},
		KindVersion:       &protorekor.KindVersion{Kind: kind.Kind, Version: kind.APIVersion},
		IntegratedTime:    rb.Payload.IntegratedTime,
		InclusionPromise:  &protorekor.InclusionPromise{SignedEntryTimestamp: rb.SignedEntryTimestamp},
		CanonicalizedBody: body,
	}, nil
}
