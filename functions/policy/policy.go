// Package policy holds admitfn's image policy: the versioned YAML document
// (document.go), its strict parser and compiler (compile.go), the embedded
// default, the checks a rule can carry (checks.go and check_*.go, one kind
// each) and the pure engine that turns request facts and image facts into
// a decision (engine.go, request.go).
package policy

import (
	_ "embed"
	"fmt"
	"os"

	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/workload"
)

const (
	// APIVersion is the only policy document version this build reads.
	APIVersion = "policy.admitfn.dev/v1alpha1"
	// Kind is the kind of a policy document.
	Kind = "ImagePolicy"
)

// Mode says what a violated rule does.
type Mode string

const (
	// Enforce denies the request.
	Enforce Mode = "enforce"
	// Warn allows it and warns the client (AdmissionReview warnings).
	Warn Mode = "warn"
	// Audit allows it and records the violation in audit annotations only.
	Audit Mode = "audit"
)

// OnError says what a rule decides when the registry cannot answer.
type OnError string

const (
	// FailClosed treats an unanswered registry question as a violation.
	FailClosed OnError = "deny"
	// FailOpen lets the image pass the rule and records that it failed open.
	FailOpen OnError = "allow"
)

//go:embed default.yaml
var defaultPolicy []byte

// DefaultYAML is the embedded default policy document.
func DefaultYAML() []byte { return append([]byte(nil), defaultPolicy...) }

// Load reads a policy file, or returns the embedded default when path is
// empty. Errors name the file.
func Load(path string) (*Policy, error) {
	if path == "" {
		return Default(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// LoadDocument is Load for a command that reads the rules as written (to
// translate them) rather than judging with them: the document of a
// policy file, or of the embedded default when path is empty.
func LoadDocument(path string) (Document, error) {
	data := defaultPolicy
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return Document{}, err
		}
	}
	doc, err := ReadDocument(data)
	if err != nil && path != "" {
		return Document{}, fmt.Errorf("%s: %w", path, err)
	}
	return doc, err
}

// Default returns the embedded default policy.
func Default() *Policy {
	p, err := Parse(defaultPolicy)
	if err != nil {
		// The default is checked by its tests; failing here is a build defect.
		panic("embedded default policy is invalid: " + err.Error())
	}
	return p
}

// MutatesIn reports whether objects in namespace ns are mutated.
func (p *Policy) MutatesIn(ns string) bool {
	return p.Mutation != nil && matchAnyGlob(p.Mutation.Namespaces, ns)
}

// Policy is a parsed, checked policy, ready for the engine.
type Policy struct {
	Name             string
	ExemptNamespaces []string
	BreakGlass       *BreakGlass
	Registry         Registry
	// PullSecrets is where pods' pull Secrets are read.
	PullSecrets PullSecretScope
	Mutation    *Mutation
	// Workloads are the declared pod-template kinds, beside the built-in.
	Workloads workload.Kinds
	Rules     []CompiledRule
	// Files are the files the policy names (keyFile, trustedRootFile), as
	// read when it was compiled: a watcher re-reads them with the policy.
	Files []string
}

// PullSecretScope is the checked form of spec.registry.pullSecrets.
type PullSecretScope struct {
	// Namespaces are globs; nil means all.
	Namespaces, ExemptNamespaces []string
}

// Reads reports whether admitfn reads the pull Secrets of pods in ns.
func (s PullSecretScope) Reads(ns string) bool {
	if matchAnyGlob(s.ExemptNamespaces, ns) {
		return false
	}
	return s.Namespaces == nil || matchAnyGlob(s.Namespaces, ns)
}

// CompiledRule is the checked form of a Rule.
type CompiledRule struct {
	Name            string
	Mode            Mode
	OnRegistryError OnError
	// OnRegistryUnauthorized decides a 401 or 403 from the registry.
	OnRegistryUnauthorized OnError
	Namespaces             []string
	ExemptNamespaces       []string
	Images                 []imageref.RepoPattern
	ExcludeImages          []imageref.RepoPattern

	// checks are the image checks the rule carries (checks.go).
	checks []imageCheck
	// Request checks.
	NodeRestriction  bool
	DenyServiceTypes []string
}

// LabelRequirement is "key" (present) or "key=glob" (present and matching).
type LabelRequirement struct {
	Key, Pattern string
	HasPattern   bool
}

func (l LabelRequirement) String() string {
	if l.HasPattern {
		return l.Key + "=" + l.Pattern
	}
	return l.Key
}
