package attestcel

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Statements in the shapes real tools write: cosign attest --type vuln
// over a Trivy report, an SPDX 2.3 SBOM (syft), a CycloneDX 1.5 SBOM, and
// SLSA provenance v1 (GitHub's generator).
const (
	vulnStatement = `{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://cosign.sigstore.dev/attestation/vuln/v1",
"subject":[{"name":"registry.corp/app","digest":{"sha256":"aaaa"}}],
"predicate":{"invocation":{"uri":"","event_id":"","builder.id":""},
 "scanner":{"uri":"pkg:github/aquasecurity/trivy@0.50.0","version":"0.50.0","db":{"uri":"","version":""},
  "result":{"SchemaVersion":2,"ArtifactName":"registry.corp/app","Results":[
   {"Target":"app (debian 12.5)","Vulnerabilities":[
    {"VulnerabilityID":"CVE-2024-0001","Severity":"HIGH","FixedVersion":"1.2.3","PublishedDate":"2024-01-02T00:00:00Z"},
    {"VulnerabilityID":"CVE-2024-0002","Severity":"CRITICAL","FixedVersion":"","PublishedDate":"2024-02-01T00:00:00Z"}]},
   {"Target":"usr/bin/app","Class":"lang-pkgs"}]}},
 "metadata":{"scanStartedOn":"2026-12-01T10:00:00Z","scanFinishedOn":"2026-12-01T10:01:00Z"}}}`
	spdxStatement = `{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document",
"subject":[{"name":"registry.corp/app","digest":{"sha256":"aaaa"}}],
"predicate":{"spdxVersion":"SPDX-2.3","name":"registry.corp/app","packages":[
 {"name":"busybox","versionInfo":"1.36.1","licenseConcluded":"GPL-2.0-only"},
 {"name":"readline","versionInfo":"8.2","licenseConcluded":"GPL-3.0-or-later"},
 {"name":"zlib","versionInfo":"1.3","licenseDeclared":"Zlib"}]}}`
	cyclonedxStatement = `{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://cyclonedx.org/bom",
"subject":[{"name":"registry.corp/app","digest":{"sha256":"aaaa"}}],
"predicate":{"bomFormat":"CycloneDX","specVersion":"1.5","components":[
 {"type":"library","name":"openssl","version":"3.0.13","licenses":[{"license":{"id":"Apache-2.0"}}]},
 {"type":"library","name":"left-pad","version":"1.3.0","licenses":[{"expression":"MIT"}]}]}}`
	slsaStatement = `{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://slsa.dev/provenance/v1",
"subject":[{"name":"registry.corp/app","digest":{"sha256":"aaaa"}}],
"predicate":{"buildDefinition":{"buildType":"https://actions.github.io/buildtypes/workflow/v1",
  "externalParameters":{"workflow":{"ref":"refs/tags/v1.2.3","repository":"https://github.com/corp/app","path":".github/workflows/release.yml"}}},
 "runDetails":{"builder":{"id":"https://github.com/actions/runner/github-hosted"},"metadata":{"invocationId":"https://github.com/corp/app/actions/runs/1/attempts/1"}}}}`
)

func statement(t *testing.T, raw string) map[string]any {
	t.Helper()
	var st map[string]any
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestConditionsOverRealPredicates(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		statement string
		expr      string
		want      bool
		wantErr   string
	}{
		{"vuln: no critical vulnerability", vulnStatement,
			`!predicate.scanner.result.Results.exists(r, has(r.Vulnerabilities) && r.Vulnerabilities.exists(v, v.Severity == 'CRITICAL'))`, false, ""},
		{"vuln: no high one with a fix", vulnStatement,
			`!predicate.scanner.result.Results.exists(r, has(r.Vulnerabilities) && r.Vulnerabilities.exists(v, v.Severity == 'HIGH' && v.FixedVersion != ''))`, false, ""},
		{"vuln: no critical one with a fix older than 30 days (the critical one has no fix)", vulnStatement,
			`!predicate.scanner.result.Results.exists(r, has(r.Vulnerabilities) && r.Vulnerabilities.exists(v, v.Severity == 'CRITICAL' && v.FixedVersion != '' && timestamp(v.PublishedDate) < now - duration('720h')))`, true, ""},
		{"vuln: scanned within the last 7 days", vulnStatement,
			`timestamp(predicate.metadata.scanFinishedOn) > now - duration('168h')`, true, ""},
		{"vuln: the predicate type, and a count", vulnStatement,
			`predicateType == 'https://cosign.sigstore.dev/attestation/vuln/v1' && predicate.scanner.result.Results.filter(r, has(r.Vulnerabilities)).size() == 1`, true, ""},
		{"spdx: no GPL-3.0 component", spdxStatement,
			`!predicate.packages.exists(p, has(p.licenseConcluded) && p.licenseConcluded.contains('GPL-3.0'))`, false, ""},
		{"spdx: at least one package, all named", spdxStatement,
			`predicate.packages.size() > 0 && predicate.packages.all(p, p.name != '')`, true, ""},
		{"cyclonedx: only allowed licence ids", cyclonedxStatement,
			`predicate.components.all(c, !has(c.licenses) || c.licenses.all(l, has(l.license) ? l.license.id in ['Apache-2.0', 'MIT'] : l.expression in ['Apache-2.0', 'MIT']))`, true, ""},
		{"slsa: built by GitHub's hosted runner from a tag of corp/app", slsaStatement,
			`predicate.runDetails.builder.id.startsWith('https://github.com/actions/runner') && predicate.buildDefinition.externalParameters.workflow.repository == 'https://github.com/corp/app' && predicate.buildDefinition.externalParameters.workflow.ref.startsWith('refs/tags/')`, true, ""},
		{"the subject's digest", slsaStatement, `subject.exists(s, s.digest.sha256 == 'aaaa')`, true, ""},
		{"a numeric field against an int literal", vulnStatement, `predicate.scanner.result.SchemaVersion >= 2`, true, ""},
		{"a field the predicate lacks: not met, with the reason", slsaStatement,
			`predicate.runDetails.builder.version == '1'`, false, "no such key: version"},
		{"a value of another type: not met", spdxStatement, `predicate.packages == 'x'`, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Compile(tt.expr)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			got, err := c.Holds(statement(t, tt.statement), now)
			if got != tt.want {
				t.Errorf("Holds = %v (%v), want %v", got, err, tt.want)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("error %v, want one with %q", err, tt.wantErr)
			}
		})
	}
}

func TestBadExpressionsAreRefusedAtLoad(t *testing.T) {
	t.Parallel()
	tests := []struct{ expr, want string }{
		{``, "empty"},
		{`predicate.x ==`, "Syntax error"},
		{`predicate.x`, ""}, // dyn: decided at run time
		{`predicate.x + 1`, "yields int"},
		{`'a string'`, "yields string"},
		{`size(subject)`, "yields int"},
		{`image == 'x'`, "undeclared reference to 'image'"},
		{strings.Repeat("true && ", 1000) + "true", "bytes long"},
	}
	for _, tt := range tests {
		_, err := Compile(tt.expr)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("Compile(%.40q) = %v, want it accepted", tt.expr, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("Compile(%.40q) = %v, want an error with %q", tt.expr, err, tt.want)
		}
	}
}

// TestCostLimitStopsAHostilePredicate: a predicate shaped to make a
// reasonable expression run long (whoever may push an attestation beside
// the image can shape it) is stopped by the cost limit, and not met.
func TestCostLimitStopsAHostilePredicate(t *testing.T) {
	t.Parallel()
	items := make([]string, 2000)
	for i := range items {
		items[i] = fmt.Sprintf(`{"id":"%d"}`, i)
	}
	raw := fmt.Sprintf(`{"predicateType":"x","subject":[],"predicate":{"a":[%[1]s],"b":[%[1]s]}}`, strings.Join(items, ","))
	c, err := Compile(`predicate.a.all(x, !predicate.b.exists(y, y.id == x.id + 'never'))`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Holds(statement(t, raw), time.Now())
	if got || err == nil || !strings.Contains(err.Error(), "cost limit") {
		t.Errorf("Holds = %v, %v; want not met for the cost limit", got, err)
	}
}
