package policy

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/admitfn/admitfn/functions/attestcel"
	"github.com/admitfn/admitfn/functions/imageref"
)

// attestationsCheck wants an in-toto attestation of a predicate type about
// the digest the runtime pulls, in a DSSE envelope signed by an authority
// (cosign attest --key), and its conditions to hold.
type attestationsCheck struct {
	predicateType string
	authorities   []signer
	conditions    []attestationCondition
	// every: each attestation of the type an authority signed must meet
	// the conditions, not one.
	every bool
}

// attestationCondition is a condition as written, its CEL compiled.
type attestationCondition struct {
	AttestationCondition
	cel *attestcel.Condition
}

func compileAttestations(field string, r Rule, fail failFunc) imageCheck {
	ar := r.Attestations
	if ar == nil {
		return nil
	}
	f := field + ".attestations"
	if ar.PredicateType == "" {
		fail(f+".predicateType", "is empty: name the in-toto predicate type, e.g. https://slsa.dev/provenance/v0.2")
	}
	if len(ar.Authorities) == 0 {
		fail(f+".authorities", "is empty: list the keys whose attestations are accepted")
	}
	k := attestationsCheck{predicateType: ar.PredicateType, every: ar.Every}
	for i, a := range ar.Authorities {
		if a.Notation != nil {
			fail(fmt.Sprintf("%s.authorities[%d].notation", f, i), "Notation signs images, not in-toto attestations: use a key or keyless authority")
			continue
		}
		s, err := compileAuthority(a)
		if err != nil {
			fail(fmt.Sprintf("%s.authorities[%d]", f, i), "%v", err)
			continue
		}
		k.authorities = append(k.authorities, s)
	}
	for i, c := range ar.Conditions {
		cf := fmt.Sprintf("%s.conditions[%d]", f, i)
		if c.CEL != "" {
			if c.Path != "" || c.Equals != "" || c.Matches != "" {
				fail(cf, "give either cel or path with equals or matches, not both")
				continue
			}
			compiled, err := attestcel.Compile(c.CEL)
			if err != nil {
				fail(cf+".cel", "%v", err)
				continue
			}
			k.conditions = append(k.conditions, attestationCondition{c, compiled})
			continue
		}
		switch {
		case c.Path == "" || strings.Contains(c.Path, ".."):
			fail(cf+".path", "%q is not a dotted path such as predicate.builder.id", c.Path)
		case (c.Equals == "") == (c.Matches == ""):
			fail(cf, "give one of equals and matches")
		case c.Matches != "":
			checkGlobs(cf+".matches", []string{c.Matches}, fail)
		}
		k.conditions = append(k.conditions, attestationCondition{AttestationCondition: c})
	}
	return k
}

func (attestationsCheck) level(imageref.Ref) Level { return LevelAttestations }

// envelope is a DSSE envelope.
type envelope struct {
	PayloadType string `json:"payloadType"`
	Payload     string `json:"payload"`
	Signatures  []struct {
		Sig string `json:"sig"`
	} `json:"signatures"`
}

func (k attestationsCheck) evaluate(c *check) {
	digest := c.facts.Digest
	fix := "attest the image by digest (cosign attest --key KEY --type … " + c.ref.Repo() + "@" + digest + ")"
	var signedByOthers bool
	var unmet, keylessReason string
	// Keyless authorities: the bundles whole, for their certificates.
	// passed: an attestation signed by an authority met every condition
	// (enough, unless every such attestation must).
	var passed bool
	for _, raw := range c.facts.Bundles {
		statement, ok := bundleStatement(raw, digest)
		if !ok || statement["predicateType"] != k.predicateType {
			continue
		}
		verified := false
		for _, a := range k.authorities {
			if a.keyless == nil {
				continue
			}
			if reason := a.verifiesBundle(raw, digest, c.now); reason != "" {
				keylessReason = fmt.Sprintf("not as keyless authority %s requires (%s)", strconvQuote(a.name), reason)
				continue
			}
			verified = true
			break
		}
		if !verified {
			continue
		}
		if problem := k.unmet(statement, c.now); problem != "" {
			unmet = problem
			continue
		}
		if !k.every {
			return
		}
		passed = true
	}
	// Key authorities: envelopes of the .att tag and of the bundles.
	type signed struct {
		env       envelope
		body      []byte
		statement map[string]any
	}
	var envelopes []signed
	for _, raw := range c.facts.Attestations {
		if env, body, st, ok := readEnvelope(raw, digest); ok {
			envelopes = append(envelopes, signed{env, body, st})
		}
	}
	for _, raw := range c.facts.Bundles {
		if env, body, st, ok := bundleEnvelope(raw, digest); ok {
			envelopes = append(envelopes, signed{env, body, st})
		}
	}
	for _, e := range envelopes {
		env, body, statement := e.env, e.body, e.statement
		if statement["predicateType"] != k.predicateType {
			continue
		}
		if signedBy(k.authorities, env, body) == "" {
			signedByOthers = true
			continue
		}
		if problem := k.unmet(statement, c.now); problem != "" {
			unmet = problem
			continue
		}
		if !k.every {
			return
		}
		passed = true
	}
	switch {
	case passed && unmet == "":
		return
	case passed:
		c.fail("attest the image only with predicates that meet the rule's conditions, or drop every: true", "has attestations of type %q, but not every one meets the rule's conditions (every: true): one %s", k.predicateType, unmet)
	case unmet != "":
		c.fail("attest the image with a predicate that meets the rule's conditions", "has an attestation of type %q, but %s", k.predicateType, unmet)
	case keylessReason != "":
		c.fail("attest "+c.ref.Repo()+"@"+digest+" keylessly as an allowed identity (cosign attest --new-bundle-format)", "has an attestation of type %q, but %s", k.predicateType, keylessReason)
	case signedByOthers:
		c.fail(fix, "has an attestation of type %q, but not signed by %s", k.predicateType, authorityList(k.names()))
	default:
		c.fail(fix, "has no attestation of type %q (cosign's %s.att, or a bundle among its referrers)%s", k.predicateType, strings.Replace(digest, ":", "-", 1), c.skipped())
	}
}

func (k attestationsCheck) names() []string {
	var out []string
	for _, a := range k.authorities {
		out = append(out, a.name)
	}
	return out
}

// readEnvelope decodes a DSSE envelope and its in-toto statement, and
// reports whether the statement is about digest.
func readEnvelope(raw []byte, digest string) (envelope, []byte, map[string]any, bool) {
	var env envelope
	if json.Unmarshal(raw, &env) != nil {
		return env, nil, nil, false
	}
	body, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return env, nil, nil, false
	}
	statement, ok := statementAbout(body, digest)
	return env, body, statement, ok
}

// bundleStatement is the in-toto statement in a whole sigstore bundle's
// DSSE envelope, and whether it is about digest.
func bundleStatement(bundle []byte, digest string) (map[string]any, bool) {
	_, _, statement, ok := bundleEnvelope(bundle, digest)
	return statement, ok
}

// bundleEnvelope is readEnvelope for the DSSE envelope of a whole
// sigstore bundle.
func bundleEnvelope(bundle []byte, digest string) (envelope, []byte, map[string]any, bool) {
	var b struct {
		DSSEEnvelope json.RawMessage `json:"dsseEnvelope"`
	}
	if json.Unmarshal(bundle, &b) != nil {
		return envelope{}, nil, nil, false
	}
	return readEnvelope(b.DSSEEnvelope, digest)
}

// signedBy returns the name of the first authority whose key signed the
// envelope over its pre-authentication encoding (DSSE's PAE), as cosign
// signs attestations and bundles, or "".
func signedBy(authorities []signer, env envelope, body []byte) string {
	pae := []byte(fmt.Sprintf("DSSEv1 %d %s %d %s", len(env.PayloadType), env.PayloadType, len(body), body))
	for _, s := range env.Signatures {
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil {
			continue
		}
		for _, a := range authorities {
			if a.verifies(pae, sig) {
				return a.name
			}
		}
	}
	return ""
}

// statementAbout parses an in-toto statement and reports whether one of
// its subjects is digest.
func statementAbout(body []byte, digest string) (map[string]any, bool) {
	var st map[string]any
	if json.Unmarshal(body, &st) != nil {
		return nil, false
	}
	algo, hex, _ := strings.Cut(digest, ":")
	subjects, _ := st["subject"].([]any)
	for _, s := range subjects {
		m, _ := s.(map[string]any)
		d, _ := m["digest"].(map[string]any)
		if v, _ := d[algo].(string); v != "" && v == hex {
			return st, true
		}
	}
	return st, false
}

// unmet names the first condition the statement does not meet, or "".
func (k attestationsCheck) unmet(statement map[string]any, now time.Time) string {
	for _, cond := range k.conditions {
		if cond.cel != nil {
			holds, err := cond.cel.Holds(statement, now)
			switch {
			case err != nil:
				return fmt.Sprintf("the condition %s cannot be evaluated on it: %v", strconvQuote(cond.CEL), err)
			case !holds:
				return fmt.Sprintf("it does not meet the condition %s", strconvQuote(cond.CEL))
			}
			continue
		}
		var v any = statement
		for _, seg := range strings.Split(cond.Path, ".") {
			m, _ := v.(map[string]any)
			v = m[seg]
		}
		s, isString := v.(string)
		switch {
		case !isString:
			return fmt.Sprintf("%s is not a string there", cond.Path)
		case cond.Equals != "" && s != cond.Equals:
			return fmt.Sprintf("%s is %q, not %q", cond.Path, s, cond.Equals)
		case cond.Matches != "":
			if ok, _ := matchGlob(cond.Matches, s); !ok {
				return fmt.Sprintf("%s is %q, which does not match %q", cond.Path, s, cond.Matches)
			}
		}
	}
	return ""
}
