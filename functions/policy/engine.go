package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/admitfn/admitfn/functions/imageref"
)

// Request is what the engine knows about an admission request.
type Request struct {
	// Namespace of the pod or workload.
	Namespace string
	// Images to judge, in the order they appear in the object.
	Images []Image
	// Annotations of the pod that the policy may read (break-glass).
	Annotations map[string]string
	// Refs optionally holds the images already parsed, keyed as written,
	// so a caller that parsed them (to plan registry lookups) need not
	// have them parsed again.
	Refs map[string]imageref.Ref

	// The rest is known for AdmissionReviews only.

	// Kind of the object, e.g. "Deployment", "Node", "Service".
	Kind string
	// Name of the object.
	Name string
	// Operation is CREATE, UPDATE, DELETE or CONNECT.
	Operation string
	// User who made the request.
	User *User
	// Node is set for requests on Nodes.
	Node *NodeChange
	// ServiceType is set for requests on Services ("ClusterIP" when unset).
	ServiceType string
	// Puller is set for objects that hold a pod: whose credentials the
	// kubelet pulls its images with. An ImageReview carries none.
	Puller *Puller
}

// Puller is what chooses the credentials the kubelet pulls a pod's images
// with: the pod's imagePullSecrets, else its ServiceAccount's.
type Puller struct {
	// Secrets are the pod's imagePullSecrets, in order.
	Secrets []string
	// ServiceAccount is the pod's serviceAccountName ("" for "default").
	ServiceAccount string
}

// User is the requester as the apiserver authenticated it.
type User struct {
	Name   string
	Groups []string
}

// NodeChange is what the node restriction rule reads of a request on a
// Node: its labels before (nil on CREATE) and after, and whether the
// fields a kubelet may not touch changed (the reading layer compares them
// as the apiserver does, nil and empty alike).
type NodeChange struct {
	OldLabels, NewLabels map[string]string
	// TaintsChanged: spec.taints differs from the old object's.
	TaintsChanged bool
	// OwnerReferencesChanged: metadata.ownerReferences differs.
	OwnerReferencesChanged bool
	// ConfigSourceSet: spec.configSource is set (CREATE) or set to a new
	// value (UPDATE).
	ConfigSourceSet bool
}

// Image is one image reference and where it was found.
type Image struct {
	// Ref as written, e.g. "nginx:1.17.1".
	Ref string
	// Field is the path of the reference in the object, e.g.
	// "spec.initContainers[0].image".
	Field string
	// Volume is set for an image volume: mounted, not run, so the
	// image's own user is not checked.
	Volume bool
	// RunAsUser is the uid the pod's securityContext runs the container
	// as, which overrides the image's user; nil when the request does not
	// say (an ImageReview never does).
	RunAsUser *int64
}

// Violation is one rule failed by one image.
type Violation struct {
	Rule  string
	Mode  Mode
	Image string
	Field string
	// Problem says what is wrong; Fix says what would pass.
	Problem string
	Fix     string
}

func (v Violation) String() string {
	if v.Image == "" && v.Field != "" {
		return fmt.Sprintf("%s violates rule %q: %s; to pass, %s", v.Field, v.Rule, v.Problem, v.Fix)
	}
	where := ""
	if v.Field != "" {
		where = " (" + v.Field + ")"
	}
	return fmt.Sprintf("image %q%s violates rule %q: %s; to pass, %s", v.Image, where, v.Rule, v.Problem, v.Fix)
}

// subject is what a violation is about, for audit annotations.
func (v Violation) subject() string {
	if v.Image == "" && v.Field != "" {
		return v.Field
	}
	return v.Image
}

// Decision is the engine's answer.
type Decision struct {
	Allowed bool
	// Violations of every mode, in image then rule order.
	Violations []Violation
	// Digests maps each image as written to the digest it resolved to.
	Digests map[string]string
	// FailedOpen lists "rule: image: error" for rules that let an image pass
	// because the registry could not answer.
	FailedOpen []string
	// Stale lists the images judged on cached facts past their TTL because
	// the registry failed.
	Stale []string
	// BreakGlass is the override reason when the annotation let a denied
	// request through.
	BreakGlass string
	// BreakGlassRefused is set when the annotation was present where the
	// policy does not honour it.
	BreakGlassRefused bool
	// Policy is the name of the policy that decided.
	Policy string
}

// Denials are the enforce violations.
func (d Decision) Denials() []Violation { return d.byMode(Enforce) }

// Warnings are the warn-mode violations, one short line each: rule,
// subject, problem.
func (d Decision) Warnings() []string {
	var out []string
	for _, v := range d.byMode(Warn) {
		out = append(out, fmt.Sprintf("admitfn rule %q: %s: %s", v.Rule, v.subject(), v.Problem))
	}
	return out
}

func (d Decision) byMode(m Mode) []Violation {
	var out []Violation
	for _, v := range d.Violations {
		if v.Mode == m {
			out = append(out, v)
		}
	}
	return out
}

// maxReasons bounds how many violations a reason spells out: the apiserver
// puts the reason into the client's error, and a pod with thousands of bad
// containers must not produce a megabyte of it.
const maxReasons = 5

// Reason is a human sentence for the decision: the enforce violations when
// denied, the first few of them spelled out.
func (d Decision) Reason() string {
	denials := d.Denials()
	var lines []string
	for i, v := range denials {
		if i == maxReasons {
			lines = append(lines, fmt.Sprintf("and %d more", len(denials)-maxReasons))
			break
		}
		lines = append(lines, v.String())
	}
	switch {
	case !d.Allowed:
		return strings.Join(lines, "; ")
	case d.BreakGlass != "":
		return fmt.Sprintf("allowed by break-glass (%s) despite: %s", d.BreakGlass, strings.Join(lines, "; "))
	case len(d.FailedOpen) > 0:
		return fmt.Sprintf("allowed by policy %q, failing open where the registry could not be asked: %s", d.Policy, strings.Join(d.FailedOpen, "; "))
	default:
		return fmt.Sprintf("allowed by policy %q", d.Policy)
	}
}

// AuditAnnotations records the decision for the apiserver's audit log. Keys
// are unprefixed: the apiserver adds its own prefix.
func (d Decision) AuditAnnotations() map[string]string {
	a := map[string]string{"policy": d.Policy}
	switch {
	case d.BreakGlass != "":
		a["decision"] = "break-glass"
		a["break-glass"] = d.BreakGlass
	case d.Allowed:
		a["decision"] = "allowed"
	default:
		a["decision"] = "denied"
	}
	if d.BreakGlassRefused {
		a["break-glass-refused"] = "true"
	}
	if len(d.Digests) > 0 {
		b, _ := json.Marshal(d.Digests)
		a["digests"] = string(b)
	}
	if len(d.Violations) > 0 {
		var vs []string
		for i, v := range d.Violations {
			if i == 4*maxReasons {
				vs = append(vs, fmt.Sprintf("and %d more", len(d.Violations)-i))
				break
			}
			vs = append(vs, fmt.Sprintf("%s/%s: %s", v.Rule, v.Mode, v.subject()))
		}
		a["violations"] = strings.Join(vs, ", ")
	}
	if len(d.FailedOpen) > 0 {
		a["failed-open"] = strings.Join(d.FailedOpen, "; ")
	}
	if len(d.Stale) > 0 {
		a["stale"] = strings.Join(d.Stale, ", ")
	}
	return a
}

// namespaceExempt reports whether no rule of the policy applies in ns.
func (p *Policy) namespaceExempt(ns string) bool { return matchAnyGlob(p.ExemptNamespaces, ns) }

// inNamespace reports whether rule r applies in namespace ns ("" for
// cluster-scoped objects).
func (r *CompiledRule) inNamespace(ns string) bool {
	if len(r.Namespaces) > 0 && !matchAnyGlob(r.Namespaces, ns) {
		return false
	}
	return !matchAnyGlob(r.ExemptNamespaces, ns)
}

// applies reports whether rule r is in scope for ref in namespace ns.
func (r *CompiledRule) applies(ns string, ref imageref.Ref) bool {
	if !r.imageRule() || !r.inNamespace(ns) {
		return false
	}
	if len(r.Images) > 0 && !matchAnyRepo(r.Images, ref) {
		return false
	}
	return !matchAnyRepo(r.ExcludeImages, ref)
}

// imageRule reports whether the rule checks images at all.
func (r *CompiledRule) imageRule() bool { return len(r.checks) > 0 }

// level is what the rule must know about ref: the most any of its checks
// needs.
func (r *CompiledRule) level(ref imageref.Ref) Level {
	level := LevelName
	for _, k := range r.checks {
		level = max(level, k.level(ref))
	}
	return level
}

// Need is how much the registry must be asked about ref for req: the
// highest level of the rules in scope, or nothing when an enforce rule
// already denies ref by its name (unless the request claims break-glass,
// whose audit wants every fact). A denied image is then never looked up:
// a reference cannot make admitfn contact a registry the policy refuses.
func (p *Policy) Need(req Request, ref imageref.Ref) Level {
	ns := req.Namespace
	if p.namespaceExempt(ns) {
		return LevelName
	}
	need := LevelName
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.applies(ns, ref) {
			need = max(need, r.level(ref))
		}
	}
	// Only an image that would be looked up is worth judging by name
	// first; Evaluate runs the name checks anyway.
	if need > LevelName && p.DeniedByName(req, ref) {
		return LevelName
	}
	return need
}

// DeniedByName reports whether an enforce rule in scope denies ref in req
// on its name alone, and req claims no break-glass: the request will be
// denied whatever the registry says.
func (p *Policy) DeniedByName(req Request, ref imageref.Ref) bool {
	if p.namespaceExempt(req.Namespace) || p.claimsBreakGlass(req) {
		return false
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.Mode != Enforce || !r.applies(req.Namespace, ref) {
			continue
		}
		c := check{rule: r, ref: ref}
		c.evaluate(LevelName)
		if len(c.problems) > 0 {
			return true
		}
	}
	return false
}

// claimsBreakGlass reports whether req carries the break-glass annotation
// with a reason (honoured or not: the decision records both).
func (p *Policy) claimsBreakGlass(req Request) bool {
	return p.BreakGlass != nil && strings.TrimSpace(req.Annotations[p.BreakGlass.Annotation]) != ""
}

// Evaluate judges a request. facts holds the registry facts per image as
// written; an image missing from it has no facts. It does no I/O.
func (p *Policy) Evaluate(req Request, facts map[string]Facts, now time.Time) Decision {
	d := Decision{Allowed: true, Policy: p.Name}
	if p.namespaceExempt(req.Namespace) {
		return d
	}
	for _, img := range req.Images {
		ref, ok := req.Refs[img.Ref]
		var err error
		if !ok {
			ref, err = imageref.Parse(img.Ref)
		}
		if err != nil {
			d.Violations = append(d.Violations, Violation{
				Rule: "image-reference", Mode: Enforce, Image: img.Ref, Field: img.Field,
				Problem: err.Error(), Fix: "write a valid reference such as registry.example/team/app:1.2.3",
			})
			continue
		}
		f := facts[img.Ref]
		if f.Stale && !slices.Contains(d.Stale, img.Ref) {
			d.Stale = append(d.Stale, img.Ref)
		}
		if f.Digest != "" {
			if d.Digests == nil {
				d.Digests = map[string]string{}
			}
			d.Digests[img.Ref] = f.Digest
		}
		for i := range p.Rules {
			r := &p.Rules[i]
			if !r.applies(req.Namespace, ref) {
				continue
			}
			c := check{rule: r, ref: ref, image: img, facts: f, now: now, podCredentials: req.Puller != nil}
			c.run()
			if c.failedOpen != "" {
				d.FailedOpen = append(d.FailedOpen, fmt.Sprintf("%s: %s: %s", r.Name, img.Ref, c.failedOpen))
			}
			for _, pr := range c.problems {
				d.Violations = append(d.Violations, Violation{
					Rule: r.Name, Mode: r.Mode, Image: img.Ref, Field: img.Field, Problem: pr.problem, Fix: pr.fix,
				})
			}
		}
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.inNamespace(req.Namespace) {
			continue
		}
		d.Violations = append(d.Violations, requestViolations(r, req)...)
	}
	if len(d.Denials()) == 0 {
		return d
	}
	d.Allowed = false
	if bg := p.BreakGlass; bg != nil {
		// Only present annotations with a reason count: an empty value is
		// more likely a templating accident than an emergency.
		if reason := strings.TrimSpace(req.Annotations[bg.Annotation]); reason != "" {
			if matchAnyGlob(bg.Namespaces, req.Namespace) {
				d.Allowed = true
				d.BreakGlass = reason
			} else {
				d.BreakGlassRefused = true
			}
		}
	}
	return d
}

type problem struct{ problem, fix string }

// check evaluates one rule against one image.
type check struct {
	rule       *CompiledRule
	ref        imageref.Ref
	image      Image
	facts      Facts
	now        time.Time
	problems   []problem
	failedOpen string
	// noConfigs is set once the missing image configs were recorded.
	noConfigs bool
	// podCredentials tells whether the registry was asked with a pod's
	// pull secrets: an ImageReview carries none.
	podCredentials bool
}

func (c *check) fail(fix, format string, args ...any) {
	c.problems = append(c.problems, problem{fmt.Sprintf(format, args...), fix})
}

func (c *check) run() {
	c.evaluate(LevelName)
	if c.rule.level(c.ref) == LevelName || !c.registryAnswered() {
		return
	}
	c.evaluate(LevelDigest)
}

// evaluate runs the rule's checks at level (LevelName), or above it.
func (c *check) evaluate(level Level) {
	for _, k := range c.rule.checks {
		if l := k.level(c.ref); (level == LevelName) == (l == LevelName) {
			k.evaluate(c)
		}
	}
}

// registryAnswered reports whether there are facts to judge; when there are
// none it records the violation or the fail-open.
func (c *check) registryAnswered() bool {
	f, r := c.facts, c.rule
	switch {
	case f.NotFound:
		what := "tag " + strconvQuote(c.tagOrLatest())
		if c.ref.Digest != "" {
			what = "digest " + c.ref.Digest
		}
		c.fail("push the image or correct the reference", "%s was not found in %s", what, c.ref.Repo())
		return false
	case f.Unauthorized:
		if r.OnRegistryUnauthorized == FailOpen {
			c.failedOpen = "registry refused admitfn: " + f.Err.Error()
			return false
		}
		fix := "give the pod (or its serviceaccount) a pull secret for the repository, or the node's credentials access to it, or set onRegistryUnauthorized: allow on the rule"
		if !c.podCredentials {
			fix = "give the node's credentials (admitfn's docker config or the kubelet's credential provider plugins) access to the repository, or set onRegistryUnauthorized: allow on the rule; an ImageReview carries no pull secrets"
		}
		c.fail(fix,
			"registry %s refused admitfn access (%v), so the image cannot be verified", c.ref.Registry, f.Err)
		return false
	case f.Err != nil:
		if r.OnRegistryError == FailOpen {
			c.failedOpen = f.Err.Error()
			return false
		}
		c.fail("retry when the registry is reachable, or set onRegistryError: allow on the rule",
			"registry %s could not be asked: %v", c.ref.Registry, f.Err)
		return false
	case f.Malformed != nil:
		// Not a registry failure: whoever pushed the image made it so, and
		// onRegistryError must not let it through.
		fix := "push an image admitfn can read: a valid manifest or index of runnable images, within admitfn's size limits"
		var fixer interface{ Fix() string }
		if errors.As(f.Malformed, &fixer) {
			fix = fixer.Fix()
		}
		c.fail(fix, "cannot be judged: %v", f.Malformed)
		return false
	case f.Level < c.rule.level(c.ref):
		// The caller asked for less than the rule needs: a defect, but the
		// safe answer is to treat it like a registry failure.
		if r.OnRegistryError == FailOpen {
			c.failedOpen = "image facts were not fetched"
			return false
		}
		c.fail("retry", "image facts were not fetched")
		return false
	}
	return true
}

func (c *check) tagOrLatest() string {
	if c.ref.Tag == "" {
		return "latest"
	}
	return c.ref.Tag
}

func providesPlatform(have []Platform, want Platform) bool {
	for _, p := range have {
		if want.Covers(p) {
			return true
		}
	}
	return false
}

func matchAnyRepo(ps []imageref.RepoPattern, ref imageref.Ref) bool {
	for _, p := range ps {
		if p.Match(ref) {
			return true
		}
	}
	return false
}

func matchAnyHost(ps []imageref.HostPattern, host string) bool {
	for _, p := range ps {
		if p.Match(host) {
			return true
		}
	}
	return false
}

func hostList(ps []imageref.HostPattern) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return quoteList(s)
}

func repoList(ps []imageref.RepoPattern) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return quoteList(s)
}

func platformList(ps []Platform) string {
	if len(ps) == 0 {
		return "no platform"
	}
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = strconvQuote(x)
	}
	return strings.Join(q, ", ")
}

func strconvQuote(s string) string { return fmt.Sprintf("%q", s) }
