package keyless_test

import (
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/admitfn/admitfn/functions/keyless"
	"github.com/admitfn/admitfn/functions/keyless/keylesstest"
)

func TestVerifyClassic(t *testing.T) {
	t.Parallel()
	auth, other := keylesstest.NewAuthority(t), keylesstest.NewAuthority(t)
	payload := []byte(`{"critical":{"identity":{"docker-reference":"registry.test/app"},"image":{"docker-manifest-digest":"sha256:aa"},"type":"cosign container image signature"},"optional":null}`)
	now := time.Now()
	longAgo := now.Add(-3 * time.Hour)
	sign := func(subject, issuer string, at time.Time, logged bool) keyless.Classic {
		return auth.Classic(t, payload, subject, issuer, at, logged).Classic(t)
	}
	// withEntry replaces c's log entry with one made by log at when.
	withEntry := func(c keyless.Classic, log *keylesstest.Authority, when time.Time) keyless.Classic {
		sum := sha256.Sum256(c.Payload)
		c.LogEntry = log.LogEntry(t, sum[:], c.Signature, c.Certificate, when, 7)
		return c
	}
	good := sign(subject, issuer, longAgo, true)
	tamperedPayload := good
	tamperedPayload.Payload = []byte(strings.Replace(string(payload), "sha256:aa", "sha256:bb", 1))
	otherSig := sign(subject, issuer, longAgo, true)
	entryOfAnother := good
	entryOfAnother.LogEntry = otherSig.LogEntry
	who := subject + " (issuer " + issuer + ")"

	// stamped is a signature made long ago, not logged, with a timestamp
	// by tsa's authority at when.
	unlogged := auth.Classic(t, payload, subject, issuer, longAgo, false)
	stamped := func(tsa *keylesstest.Authority, when time.Time) keyless.Classic {
		return tsa.Stamped(t, unlogged, when).Classic(t)
	}
	stampOfAnother := stamped(auth, longAgo.Add(time.Minute))
	stampOfAnother.Timestamp = auth.Stamped(t, auth.Classic(t, payload, subject, issuer, longAgo, false), longAgo.Add(time.Minute)).Classic(t).Timestamp
	loggedAndStamped := auth.Stamped(t, auth.Classic(t, payload, subject, issuer, longAgo, true), longAgo.Add(time.Minute)).Classic(t)
	sct := func(a *keylesstest.Authority) keyless.Classic {
		return a.Classic(t, payload, subject, issuer, longAgo, true).Classic(t)
	}
	tests := []struct {
		name     string
		tlog     bool
		ctlog    bool
		root     []byte
		c        keyless.Classic
		wantFail string // part of the reason; empty when it verifies
	}{
		{name: "logged long ago, certificate valid when logged", tlog: true, c: good},
		{name: "logged, log not required, certificate expired now", c: good, wantFail: "does not verify"},
		{name: "not logged, certificate valid now", c: sign(subject, issuer, now.Add(-time.Minute), false)},
		{name: "not logged, log required", tlog: true, c: sign(subject, issuer, now.Add(-time.Minute), false),
			wantFail: "carries no transparency-log entry, and the policy requires one"},
		{name: "logged after the certificate expired", tlog: true, c: withEntry(good, auth, longAgo.Add(20*time.Minute)), wantFail: "does not verify"},
		{name: "logged before the certificate was valid", tlog: true, c: withEntry(good, auth, longAgo.Add(-time.Minute)), wantFail: "does not verify"},
		{name: "entry signed by a log the root does not trust", tlog: true, c: withEntry(good, other, longAgo.Add(time.Minute)), wantFail: "does not verify"},
		{name: "entry of another signature", tlog: true, c: entryOfAnother, wantFail: "does not verify"},
		{name: "payload changed after signing", tlog: true, c: tamperedPayload, wantFail: "does not verify"},
		{name: "identity not allowed", tlog: true, c: sign("mallory@example.com", issuer, longAgo, true),
			wantFail: "certificate identity mallory@example.com (issuer " + issuer + ") is not allowed"},
		{name: "issuer not allowed", tlog: true, c: sign(subject, "https://evil.example", longAgo, true), wantFail: "(issuer https://evil.example) is not allowed"},
		{name: "certificate of another authority", tlog: true, root: other.TrustedRoot, c: good, wantFail: "does not verify"},
		{name: "SCT required and embedded", tlog: true, ctlog: true, c: good},
		{name: "SCT required, none", tlog: true, ctlog: true, c: sct(auth.WithoutSCT()), wantFail: "does not verify"},
		{name: "SCT required, signed by a CT log the root does not trust", tlog: true, ctlog: true, c: sct(auth.WithSCTBy(other)), wantFail: "does not verify"},
		{name: "SCT not required, none", tlog: true, c: sct(auth.WithoutSCT())},
		{name: "timestamped while the certificate was valid, not logged", c: stamped(auth, longAgo.Add(time.Minute))},
		{name: "timestamped after the certificate expired", c: stamped(auth, longAgo.Add(20*time.Minute)), wantFail: "does not verify"},
		{name: "timestamped by an authority the root does not trust", c: stamped(other, longAgo.Add(time.Minute)), wantFail: "does not verify"},
		{name: "timestamp of another signature", c: stampOfAnother, wantFail: "does not verify"},
		{name: "timestamped and logged, log required", tlog: true, c: loggedAndStamped},
		{name: "timestamped but not logged, log required", tlog: true, c: stamped(auth, longAgo.Add(time.Minute)),
			wantFail: "carries no transparency-log entry, and the policy requires one"},
		{name: "certificate annotation is not PEM", c: keyless.Classic{Payload: payload, Signature: good.Signature, Certificate: []byte("junk")},
			wantFail: "its certificate annotation holds no PEM certificate"},
		{name: "log annotation is not a log entry", tlog: true, c: keyless.Classic{Payload: payload, Signature: good.Signature, Certificate: good.Certificate, LogEntry: []byte(`{"Payload":{}}`)},
			wantFail: "its transparency-log annotation is not a log entry"},
		{name: "timestamp annotation is not cosign's", c: keyless.Classic{Payload: payload, Signature: good.Signature, Certificate: good.Certificate, Timestamp: []byte(`[]`)},
			wantFail: "its RFC 3161 timestamp annotation is not cosign's"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			root := tt.root
			if root == nil {
				root = auth.TrustedRoot
			}
			a, err := keyless.New(keyless.Options{TrustedRoot: root, Identities: []keyless.Identity{{Issuer: issuer, Subject: subject}}, TransparencyLog: tt.tlog, CTLog: tt.ctlog})
			if err != nil {
				t.Fatal(err)
			}
			v := a.VerifyClassic(tt.c, now)
			if tt.wantFail == "" {
				if v.Err != nil || v.Who != who {
					t.Fatalf("VerifyClassic = %q, %v; want %q", v.Who, v.Err, who)
				}
				return
			}
			if v.Err == nil || !strings.Contains(v.Err.Error(), tt.wantFail) {
				t.Fatalf("VerifyClassic = %q, %v; want an error containing %q", v.Who, v.Err, tt.wantFail)
			}
		})
	}
}
