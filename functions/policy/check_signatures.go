package policy

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/admitfn/admitfn/functions/imagefacts"
	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/keyless"
	"github.com/admitfn/admitfn/functions/notation"
)

// cosignSignatureType is the critical.type of a cosign simple-signing
// payload.
const cosignSignatureType = "cosign container image signature"

// signaturesCheck wants the image signed, over the digest the runtime
// pulls, by one (any) or every (all) authority: cosign's key-based
// signatures, stored in the sha256-<hex>.sig tag beside the image.
type signaturesCheck struct {
	all         bool
	authorities []signer
}

// signer is an authority with its parsed key, and the signatures already
// checked with it: verifying one costs ~50 µs (ECDSA P-256) where the rest
// of a review costs ~10, and the same few signatures come back with every
// pod of a Deployment.
type signer struct {
	name     string
	key      crypto.PublicKey
	keyless  *keyless.Authority
	notation *notation.Authority
	verified *verifyMemo
}

// verifies checks sig over message with the signer's key, remembering the
// answer (a key's verdict never changes with time).
func (s signer) verifies(message, sig []byte) bool {
	return s.verified.check(message, sig, time.Time{}, func() (string, time.Time) {
		if verifySignature(s.key, message, sig) {
			return "", keyless.Forever
		}
		return "does not verify", keyless.Forever
	}) == ""
}

// verifiesBundle checks, at now, a whole sigstore bundle with a keyless
// authority, remembering the answer until it stops being true: "" when it
// verifies, else the reason.
func (s signer) verifiesBundle(bundle []byte, digest string, now time.Time) string {
	return s.verified.check(bundle, []byte(digest), now, func() (string, time.Time) {
		return s.keylessAnswer(bundle, digest, now)
	})
}

// keylessAnswer is the keyless authority's verdict on bundle at now, as
// the memo keeps it: "" or the reason, and the instant it stops holding.
func (s signer) keylessAnswer(bundle []byte, digest string, now time.Time) (string, time.Time) {
	v := s.keyless.Verify(bundle, digest, now)
	if v.Err != nil {
		return v.Err.Error(), v.Until
	}
	return "", v.Until
}

// verifiesClassic checks, at now, a signature in cosign's classic
// keyless format (a .sig layer with a certificate) with a keyless
// authority: "" when it verifies and its payload signs digest, else the
// reason; remembered as a bundle's answer is.
func (s signer) verifiesClassic(sig imagefacts.Signature, digest string, now time.Time) string {
	// Each part hashed on its own, so no two signatures share a memo key
	// by moving bytes from one annotation into the next.
	var key []byte
	for _, part := range [][]byte{sig.Payload, sig.Signature, sig.Certificate, sig.LogEntry, sig.Timestamp} {
		sum := sha256.Sum256(part)
		key = append(key, sum[:]...)
	}
	return s.verified.check(key, []byte("classic\x00"+digest), now, func() (string, time.Time) {
		v := s.keyless.VerifyClassic(keyless.Classic{Payload: sig.Payload, Signature: sig.Signature,
			Certificate: sig.Certificate, LogEntry: sig.LogEntry, Timestamp: sig.Timestamp}, now)
		if v.Err != nil {
			return v.Err.Error(), v.Until
		}
		switch payloadDigest(sig.Payload) {
		case digest:
			return "", v.Until
		case "":
			return "signed by " + v.Who + " over something that is not a cosign signature payload (\"" + cosignSignatureType + "\" naming the digest)", keyless.Forever
		}
		return "signed by " + v.Who + " for another digest, not " + digest, keyless.Forever
	})
}

// verifiesNotation checks a Notation signature of the image's manifest:
// "" when it verifies, else the reason; remembered as a keyless answer.
func (s signer) verifiesNotation(sig imagefacts.NotationSignature, target notation.Target, now time.Time) string {
	return s.verified.check(sig.Envelope, []byte(fmt.Sprintf("notation\x00%s\x00%s\x00%s\x00%d\x00%s", sig.MediaType, target.Repo, target.MediaType, target.Size, target.Digest)), now, func() (string, time.Time) {
		// Revocation may ask an OCSP responder; the client the authority
		// holds bounds each request.
		v := s.notation.Verify(context.Background(), target, sig.MediaType, sig.Envelope, now)
		if v.Err != nil {
			if v.Who != "" {
				return "signed by " + v.Who + ": " + v.Err.Error(), v.Until
			}
			return v.Err.Error(), v.Until
		}
		return "", v.Until
	})
}

// notASignature is verifiesSignatureBundle's answer for a bundle that
// holds something else than a signing statement about the digest (an
// attestation): not a reason, a bundle to pass over.
const notASignature = "\x00not a signature"

// verifiesSignatureBundle is verifiesBundle for a bundle that must hold
// cosign's signing statement about digest; the whole answer is
// remembered, so a warm review neither parses nor verifies the bundle.
func (s signer) verifiesSignatureBundle(bundle []byte, digest string, now time.Time) string {
	return s.verified.check(bundle, []byte("sign\x00"+digest), now, func() (string, time.Time) {
		if !signsImage(bundle, digest) {
			return notASignature, keyless.Forever
		}
		return s.keylessAnswer(bundle, digest, now)
	})
}

// verifyMemo remembers verification results ("" for verified, else the
// reason) by a hash of message and signature, each with the instant it
// stops being true. It holds at most memoSize and starts over when full,
// so requests carrying ever new signatures cannot grow it.
type verifyMemo struct {
	mu      sync.Mutex
	results map[[sha256.Size]byte]memoEntry
}

type memoEntry struct {
	reason string
	// from is the instant the answer was reached at (zero for a key's,
	// which holds at any time), until when it stops being true (zero for
	// never): an engine clock outside [from, until) asks again.
	from, until time.Time
}

const memoSize = 4096

func newVerifyMemo() *verifyMemo { return &verifyMemo{results: map[[sha256.Size]byte]memoEntry{}} }

// check returns the remembered answer for (message, sig) while it holds
// at now, else verify's, remembered with the instant verify says it
// stops holding.
func (m *verifyMemo) check(message, sig []byte, now time.Time, verify func() (string, time.Time)) string {
	h := sha256.New()
	h.Write(message)
	h.Write([]byte{0})
	h.Write(sig)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	m.mu.Lock()
	e, seen := m.results[k]
	m.mu.Unlock()
	if seen && !now.Before(e.from) && (e.until.IsZero() || now.Before(e.until)) {
		return e.reason
	}
	reason, until := verify()
	m.mu.Lock()
	if len(m.results) >= memoSize {
		m.results = map[[sha256.Size]byte]memoEntry{}
	}
	m.results[k] = memoEntry{reason, now, until}
	m.mu.Unlock()
	return reason
}

func compileSignatures(field string, r Rule, fail failFunc) imageCheck {
	sr := r.Signatures
	if sr == nil {
		return nil
	}
	k := signaturesCheck{}
	switch sr.Require {
	case "", "any":
	case "all":
		k.all = true
	default:
		fail(field+".signatures.require", "%q is not one of any, all", sr.Require)
	}
	if len(sr.Authorities) == 0 {
		fail(field+".signatures.authorities", "is empty: list the keys whose signatures are accepted")
	}
	for i, a := range sr.Authorities {
		f := fmt.Sprintf("%s.signatures.authorities[%d]", field, i)
		if a.Name == "" {
			fail(f+".name", "is empty: name the authority, reasons name it")
		}
		s, err := compileAuthority(a)
		if err != nil {
			fail(f, "%v", err)
			continue
		}
		k.authorities = append(k.authorities, s)
	}
	return k
}

// compileAuthority is a key, a keyless or a Notation authority, one of
// them.
func compileAuthority(a SignatureAuthority) (signer, error) {
	s := signer{name: a.Name, verified: newVerifyMemo()}
	if n := a.Notation; n != nil {
		if a.Key != "" || a.Keyless != nil {
			return s, fmt.Errorf("has notation and a key or keyless: an authority is one of them")
		}
		auth, err := notation.New(notation.Options{TrustStore: []byte(n.TrustStore), TrustedIdentities: n.TrustedIdentities})
		if err != nil {
			return s, fmt.Errorf("notation: %v", err)
		}
		s.notation = auth
		return s, nil
	}
	if a.Keyless == nil {
		key, err := loadPublicKey(a)
		s.key = key
		return s, err
	}
	if a.Key != "" {
		return s, fmt.Errorf("has a key and keyless: an authority is one or the other")
	}
	kl := a.Keyless
	var log bool
	switch kl.TransparencyLog {
	case "required":
		log = true
	case "notRequired":
	default:
		return s, fmt.Errorf("keyless.transparencyLog %q is not required or notRequired: say which, it is never implied", kl.TransparencyLog)
	}
	var ct bool
	switch kl.CTLog {
	case "required":
		ct = true
	case "notRequired":
	default:
		return s, fmt.Errorf("keyless.ctLog %q is not required or notRequired: say which, it is never implied", kl.CTLog)
	}
	var ids []keyless.Identity
	for _, id := range kl.Identities {
		ids = append(ids, keyless.Identity{Issuer: id.Issuer, IssuerRegExp: id.IssuerRegExp, Subject: id.Subject, SubjectRegExp: id.SubjectRegExp})
	}
	auth, err := keyless.New(keyless.Options{TrustedRoot: []byte(kl.TrustedRoot), Identities: ids, TransparencyLog: log, CTLog: ct})
	if err != nil {
		return s, fmt.Errorf("keyless: %v", err)
	}
	s.keyless = auth
	return s, nil
}

// loadPublicKey reads an authority's PEM public key.
func loadPublicKey(a SignatureAuthority) (crypto.PublicKey, error) {
	if a.Key == "" {
		return nil, fmt.Errorf("key is empty: give the PEM public key")
	}
	block, _ := pem.Decode([]byte(a.Key))
	if block == nil {
		return nil, fmt.Errorf("holds no PEM block")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("is not a PKIX public key: %v", err)
	}
	switch key.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		return key, nil
	}
	return nil, fmt.Errorf("is a %T key; use ECDSA, RSA or Ed25519", key)
}

func (signaturesCheck) level(imageref.Ref) Level { return LevelSignatures }

// cosignSignPredicate is the predicate type of the statement newer cosign
// signs in a sigstore bundle (cosign sign --new-bundle-format).
const cosignSignPredicate = "https://sigstore.dev/cosign/sign/v1"

func (k signaturesCheck) evaluate(c *check) {
	digest := c.facts.Digest
	fix := "sign the image by digest (cosign sign --key KEY " + c.ref.Repo() + "@" + digest + ")"
	switch {
	case k.only(func(a signer) bool { return a.keyless != nil }):
		fix = "sign the image by digest keylessly as an allowed identity (cosign sign " + c.ref.Repo() + "@" + digest + ")"
	case k.only(func(a signer) bool { return a.notation != nil }):
		fix = "sign the image by digest with a certificate of the trust store for a trusted identity (notation sign " + c.ref.Repo() + "@" + digest + ")"
	}
	refusedFix := ""
	// Signature bundles attached through the referrers API: DSSE
	// envelopes of a cosign/sign statement about the digest.
	type bundle struct {
		env  envelope
		body []byte
	}
	var bundles []bundle
	for _, raw := range c.facts.Bundles {
		if env, body, st, ok := bundleEnvelope(raw, digest); ok && st["predicateType"] == cosignSignPredicate {
			bundles = append(bundles, bundle{env, body})
		}
	}
	if len(c.facts.Signatures) == 0 && len(bundles) == 0 && len(c.facts.NotationSignatures) == 0 {
		c.fail(fix, "has no signature (cosign's %s.sig, or a signature bundle or Notation signature among its referrers)%s", strings.Replace(digest, ":", "-", 1), c.skipped())
		return
	}
	var missing, otherDigest, notPayload, refused []string
	for _, a := range k.authorities {
		if a.notation != nil || a.keyless != nil {
			reason, kind, how := a.certificateVerdict(c, digest)
			switch {
			case reason == "" && !k.all:
				return
			case reason != "":
				refused = append(refused, fmt.Sprintf("not as %s authority %s requires (%s)", kind, strconvQuote(a.name), reason))
				refusedFix = "sign " + c.ref.Repo() + "@" + digest + " " + how
			}
			continue
		}
		signed, forOther, notCosign := false, false, false
		for _, s := range c.facts.Signatures {
			if !a.verifies(s.Payload, s.Signature) {
				continue
			}
			switch payloadDigest(s.Payload) {
			case digest:
				signed = true
			case "":
				notCosign = true
			default:
				forOther = true
			}
		}
		for _, b := range bundles {
			signed = signed || signedBy([]signer{a}, b.env, b.body) != ""
		}
		switch {
		case signed:
			if !k.all {
				return
			}
		case forOther:
			otherDigest = append(otherDigest, a.name)
		case notCosign:
			notPayload = append(notPayload, a.name)
		default:
			missing = append(missing, a.name)
		}
	}
	if len(missing)+len(otherDigest)+len(notPayload)+len(refused) == 0 {
		return
	}
	var parts []string
	if len(refused) > 0 {
		parts = append(parts, "signed, but "+strings.Join(refused, "; "))
		fix = refusedFix
	}
	if len(missing) > 0 {
		parts = append(parts, "signed, but not by "+authorityList(missing))
	}
	if len(otherDigest) > 0 {
		parts = append(parts, "signed by "+authorityList(otherDigest)+" for another digest, not "+digest)
	}
	if len(notPayload) > 0 {
		parts = append(parts, "signed by "+authorityList(notPayload)+" over something that is not a cosign signature payload (\""+cosignSignatureType+"\" naming the digest)")
	}
	if k.all {
		fix = "have every authority sign " + c.ref.Repo() + "@" + digest
	}
	c.fail(fix, "is %s%s", strings.Join(parts, "; "), c.skipped())
}

// certificateVerdict is a Notation or keyless authority's answer about
// digest: "" when one of the image's signatures of its kind verifies,
// else the reason the last one tried gives; with the authority's kind
// and how to sign for it, for the refusal and its fix.
func (a signer) certificateVerdict(c *check, digest string) (reason, kind, how string) {
	if a.notation != nil {
		reason = "no Notation signature is attached to this digest"
		target := notation.Target{Repo: c.ref.Repo(), Digest: digest, MediaType: c.facts.ManifestMediaType, Size: c.facts.ManifestSize}
		for _, ns := range c.facts.NotationSignatures {
			if reason = a.verifiesNotation(ns, target, c.now); reason == "" {
				break
			}
		}
		return reason, "Notation", "with a certificate of the trust store for a trusted identity (notation sign)"
	}
	how = "keylessly as an allowed identity (cosign sign)"
	reason = "no signature of this digest carries a certificate"
	for _, raw := range c.facts.Bundles {
		r := a.verifiesSignatureBundle(raw, digest, c.now)
		if r == notASignature {
			continue
		}
		if reason = r; reason == "" {
			return "", "keyless", how
		}
	}
	for _, s := range c.facts.Signatures {
		if s.Certificate == nil {
			continue
		}
		if reason = a.verifiesClassic(s, digest, c.now); reason == "" {
			break
		}
	}
	return reason, "keyless", how
}

// only reports whether every authority is of the kind is says, so a fix
// does not send the user for a key they do not need.
func (k signaturesCheck) only(is func(signer) bool) bool {
	for _, a := range k.authorities {
		if !is(a) {
			return false
		}
	}
	return len(k.authorities) > 0
}

// signsImage reports whether a sigstore bundle holds a cosign signing
// statement about digest (not an attestation of some other predicate).
func signsImage(bundle []byte, digest string) bool {
	st, ok := bundleStatement(bundle, digest)
	return ok && st["predicateType"] == cosignSignPredicate
}

func authorityList(names []string) string {
	if len(names) == 1 {
		return "key " + strconvQuote(names[0])
	}
	return "keys " + quoteList(names)
}

// verifySignature checks sig over payload with key as `cosign verify
// --key` does (sigstore's signature.LoadVerifier with SHA-256, cosign's
// default --signature-digest-algorithm): ECDSA over SHA-256, the signature
// ASN.1 DER or else IEEE P1363 (r‖s, what some HSMs and KMSs return); RSA
// PKCS #1 v1.5 over SHA-256 only (cosign refuses PSS here, and so does
// admitfn); Ed25519 over the payload itself.
func verifySignature(key crypto.PublicKey, payload, sig []byte) bool {
	sum := sha256.Sum256(payload)
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		var der struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(sig, &der); err == nil {
			return ecdsa.VerifyASN1(k, sum[:], sig)
		}
		// As sigstore's ECDSAVerifier: any even length up to P-521's.
		if len(sig) == 0 || len(sig) > 132 || len(sig)%2 != 0 {
			return false
		}
		r, s := new(big.Int).SetBytes(sig[:len(sig)/2]), new(big.Int).SetBytes(sig[len(sig)/2:])
		return ecdsa.Verify(k, sum[:], r, s)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig) == nil
	case ed25519.PublicKey:
		return ed25519.Verify(k, payload, sig)
	}
	return false
}

// payloadDigest is the image digest a cosign simple-signing payload signs,
// or "" when the payload is not one.
func payloadDigest(payload []byte) string {
	var p struct {
		Critical struct {
			Type  string `json:"type"`
			Image struct {
				Digest string `json:"docker-manifest-digest"`
			} `json:"image"`
		} `json:"critical"`
	}
	if json.Unmarshal(payload, &p) != nil || p.Critical.Type != cosignSignatureType {
		return ""
	}
	return p.Critical.Image.Digest
}
