// Package policy holds admitfn's image policy: the versioned YAML document,
// its strict parser, the embedded default and the pure engine that turns
// request facts and image facts into a decision.
package policy

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

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

// Default returns the embedded default policy.
func Default() *Policy {
	p, err := Parse(defaultPolicy)
	if err != nil {
		// The default is checked by its tests; failing here is a build defect.
		panic("embedded default policy is invalid: " + err.Error())
	}
	return p
}

// Document is a policy as written in YAML.
type Document struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	Metadata   *Metadata `json:"metadata,omitempty"`
	Spec       Spec      `json:"spec"`
}

// Metadata names a policy; the name shows up in audit annotations.
type Metadata struct {
	Name string `json:"name,omitempty"`
}

// Spec is the body of a policy.
type Spec struct {
	// ExemptNamespaces are namespace globs no rule applies to.
	ExemptNamespaces []string `json:"exemptNamespaces,omitempty"`
	// BreakGlass lets a pod annotation override enforce rules, where allowed.
	BreakGlass *BreakGlass `json:"breakGlass,omitempty"`
	// Registry tunes how image facts are fetched.
	Registry RegistrySettings `json:"registry,omitempty"`
	// Mutation configures the mutating handler; it is off unless set.
	Mutation *Mutation `json:"mutation,omitempty"`
	// Workloads declares further kinds that carry a pod template (Argo
	// Rollouts, OpenKruise, in-house CRDs), judged and pinned like a
	// Deployment once their resources are in the webhook registrations.
	Workloads []WorkloadKind `json:"workloads,omitempty"`
	// Rules are evaluated for every request; all of them apply.
	Rules []Rule `json:"rules"`
}

// WorkloadKind says where a kind keeps its pod template.
type WorkloadKind struct {
	// APIGroup of the kind, e.g. argoproj.io.
	APIGroup string `json:"apiGroup"`
	// Kind, e.g. Rollout.
	Kind string `json:"kind"`
	// PodTemplate is the dotted path of the pod template (an object with
	// metadata and spec) in the object, e.g. spec.template; "." when the
	// object's own spec is the pod spec.
	PodTemplate string `json:"podTemplate"`
}

// MutatesIn reports whether objects in namespace ns are mutated.
func (p *Policy) MutatesIn(ns string) bool {
	return p.Mutation != nil && matchAnyGlob(p.Mutation.Namespaces, ns)
}

// Mutation is what the mutating handler changes, in the namespaces that opt
// in: mutation fights GitOps tools that see the change as drift.
type Mutation struct {
	// Namespaces (globs) where objects are mutated.
	Namespaces []string `json:"namespaces"`
	// PinDigests rewrites each image to the digest the policy resolved.
	PinDigests bool `json:"pinDigests,omitempty"`
	// PinForm is "tagAndDigest" (repo:tag@sha256:..., the default) or
	// "digest" (repo@sha256:...).
	PinForm PinForm `json:"pinForm,omitempty"`
	// AlwaysPullImages sets imagePullPolicy: Always, like the admission
	// plugin of that name.
	AlwaysPullImages bool `json:"alwaysPullImages,omitempty"`
}

// PinForm is how a pinned image reference is written.
type PinForm string

const (
	// PinTagAndDigest keeps the tag for readers: nginx:1.25@sha256:...
	PinTagAndDigest PinForm = "tagAndDigest"
	// PinDigest drops the tag: nginx@sha256:...
	PinDigest PinForm = "digest"
)

// BreakGlass configures the emergency override annotation.
type BreakGlass struct {
	// Annotation is the pod annotation key. It must contain
	// ".image-policy.k8s.io/": the apiserver forwards no other annotations.
	Annotation string `json:"annotation"`
	// Namespaces are the namespace globs where the override is honoured.
	Namespaces []string `json:"namespaces"`
}

// RegistrySettings tunes the resolver.
type RegistrySettings struct {
	// Insecure lists registry host globs reached over plain HTTP.
	Insecure []string `json:"insecure,omitempty"`
	// Internal lists registry host globs that may be reached at loopback,
	// link-local or private addresses. No other registry is: a review
	// naming one cannot make admitfn connect inward. Insecure hosts are
	// internal too.
	Internal []string `json:"internal,omitempty"`
	// Timeout caps every registry lookup (default 10s).
	Timeout string `json:"timeout,omitempty"`
	// CacheTTL is how long a resolved tag is trusted (default 5m).
	CacheTTL string `json:"cacheTTL,omitempty"`
	// NegativeCacheTTL is how long "not found" is trusted (default 30s).
	NegativeCacheTTL string `json:"negativeCacheTTL,omitempty"`
	// StaleWindow is how long past its TTL an entry may still be served when
	// the registry fails (default 1h; "0s" disables).
	StaleWindow string `json:"staleWindow,omitempty"`
	// CacheSize bounds the number of cached lookups (default 4096).
	CacheSize *int `json:"cacheSize,omitempty"`
	// Platforms are the platforms of a multi-arch index whose configs are
	// inspected (default linux/amd64 and linux/arm64).
	Platforms []string `json:"platforms,omitempty"`
}

// Rule is one named check (or a few) over the images in its scope.
type Rule struct {
	Name string `json:"name"`
	// Mode is enforce (default), warn or audit.
	Mode Mode `json:"mode,omitempty"`
	// OnRegistryError is deny (default) or allow.
	OnRegistryError OnError `json:"onRegistryError,omitempty"`
	// OnRegistryUnauthorized is what a 401 or 403 from the registry means
	// (admitfn may not read the repository, though the pod's pull secret
	// may): deny (default) or allow. It is not onRegistryError, so that a
	// pod's author cannot choose a private repository to fail open.
	OnRegistryUnauthorized OnError `json:"onRegistryUnauthorized,omitempty"`
	// Namespaces limits the rule to these namespace globs (default: all).
	Namespaces []string `json:"namespaces,omitempty"`
	// ExemptNamespaces are namespace globs the rule skips.
	ExemptNamespaces []string `json:"exemptNamespaces,omitempty"`
	// Images limits the rule to these repository patterns (default: all).
	Images []string `json:"images,omitempty"`
	// ExcludeImages are repository patterns the rule skips.
	ExcludeImages []string `json:"excludeImages,omitempty"`

	Tags           *TagRule  `json:"tags,omitempty"`
	Registries     *ListRule `json:"registries,omitempty"`
	Repositories   *ListRule `json:"repositories,omitempty"`
	RequireDigest  bool      `json:"requireDigest,omitempty"`
	Digests        []string  `json:"digests,omitempty"`
	Resolvable     bool      `json:"resolvable,omitempty"`
	NonRoot        bool      `json:"nonRoot,omitempty"`
	MaxAge         string    `json:"maxAge,omitempty"`
	RequiredLabels []string  `json:"requiredLabels,omitempty"`
	Platforms      []string  `json:"platforms,omitempty"`

	// NodeRestriction applies the NodeRestriction plugin's label rules to
	// kubelets (user system:node:<name> in group system:nodes): a kubelet
	// may modify only its own Node, and no label under
	// node-restriction.kubernetes.io/ on it.
	NodeRestriction bool `json:"nodeRestriction,omitempty"`
	// ServiceTypes denies Services of the listed types, e.g. LoadBalancer.
	ServiceTypes *ServiceTypeRule `json:"serviceTypes,omitempty"`
}

// ServiceTypeRule lists Service types that are refused.
type ServiceTypeRule struct {
	Deny []string `json:"deny"`
}

// TagRule checks the tag as written.
type TagRule struct {
	// DenyLatest denies ":latest" unless a digest pins the image.
	DenyLatest bool `json:"denyLatest,omitempty"`
	// DenyUntagged denies references with neither tag nor digest.
	DenyUntagged bool `json:"denyUntagged,omitempty"`
	// Deny lists tag globs that are refused.
	Deny []string `json:"deny,omitempty"`
	// Allow, when set, lists the only tag globs accepted.
	Allow []string `json:"allow,omitempty"`
}

// ListRule is an allow list and a deny list of patterns.
type ListRule struct {
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
}

// Policy is a parsed, checked policy, ready for the engine.
type Policy struct {
	Name             string
	ExemptNamespaces []string
	BreakGlass       *BreakGlass
	Registry         Registry
	Mutation         *Mutation
	// Workloads are the declared pod-template kinds, beside the built-in.
	Workloads workload.Kinds
	Rules     []CompiledRule
}

// Registry is the checked form of RegistrySettings.
type Registry struct {
	Insecure         []imageref.HostPattern
	Internal         []imageref.HostPattern
	Timeout          time.Duration
	CacheTTL         time.Duration
	NegativeCacheTTL time.Duration
	StaleWindow      time.Duration
	CacheSize        int
	Platforms        []Platform
}

// IsInsecure reports whether the policy lets host be reached over plain HTTP.
func (r Registry) IsInsecure(host string) bool {
	for _, p := range r.Insecure {
		if p.Match(host) {
			return true
		}
	}
	return false
}

// IsInternal reports whether the policy lets host be reached at an
// inward address (loopback, link-local, private): it is listed under
// internal or insecure.
func (r Registry) IsInternal(host string) bool {
	for _, p := range r.Internal {
		if p.Match(host) {
			return true
		}
	}
	return r.IsInsecure(host)
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

	Tags              *TagRule
	AllowRegistries   []imageref.HostPattern
	DenyRegistries    []imageref.HostPattern
	AllowRepositories []imageref.RepoPattern
	DenyRepositories  []imageref.RepoPattern
	RequireDigest     bool
	Digests           map[string]bool
	Resolvable        bool
	NonRoot           bool
	MaxAge            time.Duration
	RequiredLabels    []LabelRequirement
	Platforms         []Platform
	NodeRestriction   bool
	DenyServiceTypes  []string
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

// Platform is os/arch[/variant].
type Platform struct{ OS, Arch, Variant string }

func (p Platform) String() string {
	s := p.OS + "/" + p.Arch
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Covers reports whether q satisfies p: same OS and architecture, and the
// same variant when p names one.
func (p Platform) Covers(q Platform) bool {
	return p.OS == q.OS && p.Arch == q.Arch && (p.Variant == "" || p.Variant == q.Variant)
}

// ParsePlatform reads "os/arch[/variant]".
func ParsePlatform(s string) (Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return Platform{}, fmt.Errorf("%q is not os/arch[/variant]", s)
	}
	p := Platform{OS: parts[0], Arch: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// Parse reads a policy document strictly: unknown or duplicate fields and
// bad values are errors that name the field.
func Parse(data []byte) (*Policy, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("policy is not valid YAML: %w", err)
	}
	var doc Document
	strict, err := sigsjson.UnmarshalStrict(js, &doc, sigsjson.DisallowUnknownFields, sigsjson.DisallowDuplicateFields)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("policy: %w", errors.Join(strict...))
	}
	return Compile(doc)
}

// Compile checks a document and prepares it for the engine.
func Compile(doc Document) (*Policy, error) {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if doc.APIVersion != APIVersion {
		fail("apiVersion", "%q is not supported; use %q", doc.APIVersion, APIVersion)
	}
	if doc.Kind != Kind {
		fail("kind", "%q is not supported; use %q", doc.Kind, Kind)
	}
	p := &Policy{Name: "unnamed"}
	if doc.Metadata != nil && doc.Metadata.Name != "" {
		p.Name = doc.Metadata.Name
	}
	spec := doc.Spec
	p.ExemptNamespaces = checkGlobs("spec.exemptNamespaces", spec.ExemptNamespaces, fail)

	if bg := spec.BreakGlass; bg != nil {
		if !strings.Contains(bg.Annotation, ".image-policy.k8s.io/") {
			fail("spec.breakGlass.annotation", "%q must contain \".image-policy.k8s.io/\": kube-apiserver forwards no other pod annotations to the backend", bg.Annotation)
		}
		if len(bg.Namespaces) == 0 {
			fail("spec.breakGlass.namespaces", "is empty: list the namespaces (globs) where break-glass is honoured")
		}
		checkGlobs("spec.breakGlass.namespaces", bg.Namespaces, fail)
		p.BreakGlass = &BreakGlass{Annotation: bg.Annotation, Namespaces: append([]string(nil), bg.Namespaces...)}
	}

	reg := spec.Registry
	p.Registry = Registry{
		Timeout:          duration("spec.registry.timeout", reg.Timeout, 10*time.Second, fail),
		CacheTTL:         duration("spec.registry.cacheTTL", reg.CacheTTL, 5*time.Minute, fail),
		NegativeCacheTTL: duration("spec.registry.negativeCacheTTL", reg.NegativeCacheTTL, 30*time.Second, fail),
		StaleWindow:      duration("spec.registry.staleWindow", reg.StaleWindow, time.Hour, fail),
		CacheSize:        4096,
	}
	if p.Registry.Timeout == 0 {
		fail("spec.registry.timeout", "must be more than 0s")
	}
	if reg.CacheSize != nil {
		if *reg.CacheSize < 1 {
			fail("spec.registry.cacheSize", "%d must be at least 1", *reg.CacheSize)
		}
		p.Registry.CacheSize = *reg.CacheSize
	}
	for i, h := range reg.Insecure {
		hp, err := imageref.ParseHostPattern(h)
		if err != nil {
			fail(fmt.Sprintf("spec.registry.insecure[%d]", i), "%v", err)
		}
		p.Registry.Insecure = append(p.Registry.Insecure, hp)
	}
	for i, h := range reg.Internal {
		hp, err := imageref.ParseHostPattern(h)
		if err != nil {
			fail(fmt.Sprintf("spec.registry.internal[%d]", i), "%v", err)
		}
		p.Registry.Internal = append(p.Registry.Internal, hp)
	}
	platforms := reg.Platforms
	if len(platforms) == 0 {
		platforms = []string{"linux/amd64", "linux/arm64"}
	}
	p.Registry.Platforms = checkPlatforms("spec.registry.platforms", platforms, fail)

	if spec.Mutation != nil {
		m := *spec.Mutation
		if len(m.Namespaces) == 0 {
			fail("spec.mutation.namespaces", "is empty: mutation is opt-in; list the namespaces (globs) to mutate")
		}
		checkGlobs("spec.mutation.namespaces", m.Namespaces, fail)
		switch m.PinForm {
		case "":
			m.PinForm = PinTagAndDigest
		case PinTagAndDigest, PinDigest:
		default:
			fail("spec.mutation.pinForm", "%q is not one of tagAndDigest, digest", m.PinForm)
		}
		if !m.PinDigests && !m.AlwaysPullImages {
			fail("spec.mutation", "changes nothing: set pinDigests or alwaysPullImages")
		}
		m.Namespaces = append([]string(nil), m.Namespaces...)
		p.Mutation = &m
	}

	for i, w := range spec.Workloads {
		field := fmt.Sprintf("spec.workloads[%d]", i)
		if w.Kind == "" {
			fail(field+".kind", "is empty")
			continue
		}
		key := workload.Key(w.APIGroup, w.Kind)
		if workload.HoldsPods(p.Workloads, key) {
			fail(field, "%s is already known (built in or declared before)", key)
			continue
		}
		var path []string
		switch tp := strings.TrimSpace(w.PodTemplate); tp {
		case "":
			fail(field+".podTemplate", `is empty: give the dotted path of the pod template, e.g. spec.template, or "." for the object itself`)
			continue
		case ".":
		default:
			path = strings.Split(tp, ".")
			if slices.Contains(path, "") {
				fail(field+".podTemplate", "%q has an empty path segment", tp)
				continue
			}
		}
		if p.Workloads == nil {
			p.Workloads = workload.Kinds{}
		}
		p.Workloads[key] = path
	}

	if len(spec.Rules) == 0 {
		fail("spec.rules", "is empty: a policy needs at least one rule")
	}
	seen := map[string]bool{}
	for i, r := range spec.Rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		if r.Name == "" {
			fail(field+".name", "is required")
		} else if seen[r.Name] {
			fail(field+".name", "%q is used by an earlier rule", r.Name)
		}
		seen[r.Name] = true
		p.Rules = append(p.Rules, compileRule(field, r, fail))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

type failFunc func(field, format string, args ...any)

func compileRule(field string, r Rule, fail failFunc) CompiledRule {
	c := CompiledRule{
		Name:                   r.Name,
		Mode:                   r.Mode,
		OnRegistryError:        r.OnRegistryError,
		OnRegistryUnauthorized: r.OnRegistryUnauthorized,
		RequireDigest:          r.RequireDigest,
		Resolvable:             r.Resolvable,
		NonRoot:                r.NonRoot,
		Tags:                   r.Tags,
		NodeRestriction:        r.NodeRestriction,
	}
	switch c.Mode {
	case "":
		c.Mode = Enforce
	case Enforce, Warn, Audit:
	default:
		fail(field+".mode", "%q is not one of enforce, warn, audit", r.Mode)
	}
	switch c.OnRegistryError {
	case "":
		c.OnRegistryError = FailClosed
	case FailClosed, FailOpen:
	default:
		fail(field+".onRegistryError", "%q is not one of deny, allow", r.OnRegistryError)
	}
	switch c.OnRegistryUnauthorized {
	case "":
		c.OnRegistryUnauthorized = FailClosed
	case FailClosed, FailOpen:
	default:
		fail(field+".onRegistryUnauthorized", "%q is not one of deny, allow", r.OnRegistryUnauthorized)
	}
	c.Namespaces = checkGlobs(field+".namespaces", r.Namespaces, fail)
	c.ExemptNamespaces = checkGlobs(field+".exemptNamespaces", r.ExemptNamespaces, fail)
	c.Images = repoPatterns(field+".images", r.Images, fail)
	c.ExcludeImages = repoPatterns(field+".excludeImages", r.ExcludeImages, fail)

	checks := 0
	if t := r.Tags; t != nil {
		checks++
		checkGlobs(field+".tags.deny", t.Deny, fail)
		checkGlobs(field+".tags.allow", t.Allow, fail)
		if !t.DenyLatest && !t.DenyUntagged && len(t.Deny) == 0 && len(t.Allow) == 0 {
			fail(field+".tags", "checks nothing: set denyLatest, denyUntagged, deny or allow")
		}
	}
	if l := r.Registries; l != nil {
		checks++
		if len(l.Allow)+len(l.Deny) == 0 {
			fail(field+".registries", "checks nothing: set allow or deny")
		}
		for i, s := range l.Allow {
			hp, err := imageref.ParseHostPattern(s)
			if err != nil {
				fail(fmt.Sprintf("%s.registries.allow[%d]", field, i), "%v", err)
			}
			c.AllowRegistries = append(c.AllowRegistries, hp)
		}
		for i, s := range l.Deny {
			hp, err := imageref.ParseHostPattern(s)
			if err != nil {
				fail(fmt.Sprintf("%s.registries.deny[%d]", field, i), "%v", err)
			}
			c.DenyRegistries = append(c.DenyRegistries, hp)
		}
	}
	if l := r.Repositories; l != nil {
		checks++
		if len(l.Allow)+len(l.Deny) == 0 {
			fail(field+".repositories", "checks nothing: set allow or deny")
		}
		c.AllowRepositories = repoPatterns(field+".repositories.allow", l.Allow, fail)
		c.DenyRepositories = repoPatterns(field+".repositories.deny", l.Deny, fail)
	}
	if r.Digests != nil {
		checks++
		if len(r.Digests) == 0 {
			fail(field+".digests", "is empty: list the allowed digests")
		}
		c.Digests = map[string]bool{}
		for i, d := range r.Digests {
			if !validDigest(d) {
				fail(fmt.Sprintf("%s.digests[%d]", field, i), "%q is not a sha256:<64 hex> digest", d)
			}
			c.Digests[d] = true
		}
	}
	if r.MaxAge != "" {
		checks++
		c.MaxAge = duration(field+".maxAge", r.MaxAge, 0, fail)
		if c.MaxAge <= 0 {
			fail(field+".maxAge", "%q must be more than 0s", r.MaxAge)
		}
	}
	for i, l := range r.RequiredLabels {
		f := fmt.Sprintf("%s.requiredLabels[%d]", field, i)
		key, pat, has := strings.Cut(l, "=")
		if key == "" {
			fail(f, "%q has no label key", l)
		}
		if has {
			checkGlobs(f, []string{pat}, fail)
		}
		c.RequiredLabels = append(c.RequiredLabels, LabelRequirement{Key: key, Pattern: pat, HasPattern: has})
	}
	c.Platforms = checkPlatforms(field+".platforms", r.Platforms, fail)
	if st := r.ServiceTypes; st != nil {
		checks++
		if len(st.Deny) == 0 {
			fail(field+".serviceTypes.deny", "is empty: list the Service types to refuse")
		}
		for i, ty := range st.Deny {
			switch ty {
			case "ClusterIP", "NodePort", "LoadBalancer", "ExternalName":
			default:
				fail(fmt.Sprintf("%s.serviceTypes.deny[%d]", field, i), "%q is not one of ClusterIP, NodePort, LoadBalancer, ExternalName", ty)
			}
		}
		c.DenyServiceTypes = append([]string(nil), st.Deny...)
	}
	for _, b := range []bool{r.RequireDigest, r.Resolvable, r.NonRoot, len(r.RequiredLabels) > 0, len(r.Platforms) > 0, r.NodeRestriction} {
		if b {
			checks++
		}
	}
	if checks == 0 {
		fail(field, "rule %q checks nothing: set one of tags, registries, repositories, requireDigest, digests, resolvable, nonRoot, maxAge, requiredLabels, platforms, nodeRestriction, serviceTypes", r.Name)
	}
	return c
}

func checkGlobs(field string, globs []string, fail failFunc) []string {
	for i, g := range globs {
		if g == "" {
			fail(fmt.Sprintf("%s[%d]", field, i), "is empty")
			continue
		}
		if _, err := path.Match(g, ""); err != nil {
			fail(fmt.Sprintf("%s[%d]", field, i), "%q is not a valid glob: %v", g, err)
		}
	}
	return append([]string(nil), globs...)
}

func repoPatterns(field string, in []string, fail failFunc) []imageref.RepoPattern {
	var out []imageref.RepoPattern
	for i, s := range in {
		p, err := imageref.ParseRepoPattern(s)
		if err != nil {
			fail(fmt.Sprintf("%s[%d]", field, i), "%v", err)
			continue
		}
		out = append(out, p)
	}
	return out
}

func checkPlatforms(field string, in []string, fail failFunc) []Platform {
	var out []Platform
	for i, s := range in {
		p, err := ParsePlatform(s)
		if err != nil {
			fail(fmt.Sprintf("%s[%d]", field, i), "%v", err)
			continue
		}
		out = append(out, p)
	}
	return out
}

// duration reads Go durations ("90s", "12h") and whole days ("30d").
func duration(field, s string, def time.Duration, fail failFunc) time.Duration {
	if s == "" {
		return def
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err == nil && n >= 0 {
			return time.Duration(n) * 24 * time.Hour
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		fail(field, "%q is not a duration such as 30s, 12h or 30d", s)
		return def
	}
	return d
}

func validDigest(d string) bool {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	for _, c := range hex {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func matchGlob(glob, s string) (bool, error) { return path.Match(glob, s) }

func matchAnyGlob(globs []string, s string) bool {
	for _, g := range globs {
		if ok, _ := matchGlob(g, s); ok {
			return true
		}
	}
	return false
}
