// Package vap writes a policy's name-only rules as ValidatingAdmissionPolicies,
// so that kube-apiserver decides them in process, with no webhook call.
//
// A rule goes to a ValidatingAdmissionPolicy only when CEL can decide it
// exactly as the engine does: tags, registries, repositories,
// requireDigest and serviceTypes, scoped by namespaces and images. A rule
// that needs registry facts (signatures, digests, image configs) or
// what CEL cannot see as the engine does (the node restriction) stays
// with the webhook, never approximated. References are parsed in CEL as
// imageref.Parse parses them; the generated policies are held to the
// engine by a differential test in test/vap that runs them with the
// apiserver's own admission-policy libraries.
package vap

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/policy"
)

// MinKubernetes is the oldest kube-apiserver whose CEL environment has
// what the generated expressions use (two-variable comprehensions since
// 1.32, lists' flatten and slice since 1.34).
const MinKubernetes = "1.34"

// Placement says where one rule of the policy is decided.
type Placement struct {
	Rule string
	// Policy is the ValidatingAdmissionPolicy holding the rule, "" when
	// it stays with the webhook.
	Policy string
	// Why the rule stays with the webhook.
	Why string
}

// Output is what Generate writes.
type Output struct {
	Policies   []admissionregistrationv1.ValidatingAdmissionPolicy
	Bindings   []admissionregistrationv1.ValidatingAdmissionPolicyBinding
	Placements []Placement
}

// Options change the generated objects.
type Options struct {
	// Prefix starts every object's name (default "admitfn").
	Prefix string
	// Static names the objects for kube-apiserver's manifest-based
	// admission configuration (staticManifestsDir, KEP-5793): such
	// objects are loaded from files before the apiserver serves, and
	// cannot be created, changed or deleted through the API.
	Static bool
	// NamespaceSelector and MatchConditions limit the policies as the
	// webhook registration is limited (webhookconfig.WorkloadScope): the
	// namespaces left out so that no policy can lock the cluster out.
	NamespaceSelector *metav1.LabelSelector
	MatchConditions   []admissionregistrationv1.MatchCondition
}

// StaticSuffix ends the name of every object loaded from
// staticManifestsDir; the apiserver refuses API objects named so.
const StaticSuffix = ".static.k8s.io"

// Generate writes doc's name-only rules as one ValidatingAdmissionPolicy
// and binding per mode (enforce → Deny, warn → Warn, audit → Audit). The
// enforce policy is always written: like the engine, it refuses an image
// reference the kubelet and admitfn would not read alike, whatever the
// rules. doc must compile.
func Generate(doc policy.Document, opts Options) (Output, error) {
	if _, err := policy.Compile(doc); err != nil {
		return Output{}, err
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = "admitfn"
	}
	name := "unnamed"
	if doc.Metadata != nil && doc.Metadata.Name != "" {
		name = doc.Metadata.Name
	}
	g := generator{spec: doc.Spec, opts: opts}
	var out Output
	byMode := map[policy.Mode][]policy.Rule{}
	for _, r := range doc.Spec.Rules {
		mode := r.Mode
		if mode == "" {
			mode = policy.Enforce
		}
		if why := webhookOnly(r); why != "" {
			out.Placements = append(out.Placements, Placement{Rule: r.Name, Why: why})
			continue
		}
		byMode[mode] = append(byMode[mode], r)
		out.Placements = append(out.Placements, Placement{Rule: r.Name, Policy: objectName(prefix, name, mode, opts.Static)})
	}
	for _, mode := range []policy.Mode{policy.Enforce, policy.Warn, policy.Audit} {
		rules := byMode[mode]
		if len(rules) == 0 && mode != policy.Enforce {
			continue
		}
		vap, err := g.policy(objectName(prefix, name, mode, opts.Static), mode, rules)
		if err != nil {
			return Output{}, err
		}
		out.Policies = append(out.Policies, vap)
		out.Bindings = append(out.Bindings, binding(vap.Name, mode))
	}
	return out, nil
}

func objectName(prefix, policyName string, mode policy.Mode, static bool) string {
	name := fmt.Sprintf("%s-%s-%s", prefix, policyName, mode)
	if static {
		name += StaticSuffix
	}
	return name
}

// webhookOnly says why a rule cannot be a ValidatingAdmissionPolicy, or
// "" when it can.
func webhookOnly(r policy.Rule) string {
	var needs []string
	add := func(set bool, field string) {
		if set {
			needs = append(needs, field)
		}
	}
	add(r.Digests != nil, "digests")
	add(r.Resolvable, "resolvable")
	add(r.NonRoot, "nonRoot")
	add(r.MaxAge != "", "maxAge")
	add(len(r.RequiredLabels) > 0, "requiredLabels")
	add(len(r.Platforms) > 0, "platforms")
	add(r.Signatures != nil, "signatures")
	add(r.Attestations != nil, "attestations")
	if len(needs) > 0 {
		return "needs registry facts (" + strings.Join(needs, ", ") + ")"
	}
	return ""
}

func binding(policyName string, mode policy.Mode) admissionregistrationv1.ValidatingAdmissionPolicyBinding {
	action := map[policy.Mode]admissionregistrationv1.ValidationAction{
		policy.Enforce: admissionregistrationv1.Deny, policy.Warn: admissionregistrationv1.Warn, policy.Audit: admissionregistrationv1.Audit,
	}[mode]
	return admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicyBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: policyName, Labels: map[string]string{"app.kubernetes.io/managed-by": "admitfn"}},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policyName,
			ValidationActions: []admissionregistrationv1.ValidationAction{action},
		},
	}
}

type generator struct {
	spec policy.Spec
	opts Options
}

// podResources are the resources of workload's built-in kinds, whose
// objects hold a pod (template).
var podResources = []admissionregistrationv1.NamedRuleWithOperations{
	rule("", "v1", []string{"pods", "pods/ephemeralcontainers", "podtemplates", "replicationcontrollers"}),
	rule("apps", "v1", []string{"deployments", "replicasets", "statefulsets", "daemonsets"}),
	rule("batch", "v1", []string{"jobs", "cronjobs"}),
	rule("serving.knative.dev", "*", []string{"services", "configurations", "revisions"}),
}

func rule(group, version string, resources []string) admissionregistrationv1.NamedRuleWithOperations {
	return admissionregistrationv1.NamedRuleWithOperations{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
		Rule:       admissionregistrationv1.Rule{APIGroups: []string{group}, APIVersions: []string{version}, Resources: resources},
	}}
}

func (g generator) policy(name string, mode policy.Mode, rules []policy.Rule) (admissionregistrationv1.ValidatingAdmissionPolicy, error) {
	resources := append([]admissionregistrationv1.NamedRuleWithOperations(nil), podResources...)
	services, nodes := false, false
	for _, r := range rules {
		services = services || r.ServiceTypes != nil
		nodes = nodes || r.NodeRestriction
	}
	if services {
		resources = append(resources, rule("", "v1", []string{"services"}))
	}
	if nodes {
		// Not nodes/status, as the webhook (a kubelet's status updates
		// are the plugin's to judge).
		r := rule("", "v1", []string{"nodes"})
		r.Operations = append(r.Operations, admissionregistrationv1.Delete)
		resources = append(resources, r)
	}
	vars, err := g.variables(mode, rules)
	if err != nil {
		return admissionregistrationv1.ValidatingAdmissionPolicy{}, err
	}
	fast, err := fastPass(rules)
	if err != nil {
		return admissionregistrationv1.ValidatingAdmissionPolicy{}, err
	}
	validation := admissionregistrationv1.Validation{
		Expression: `variables.exempt || variables.clean`,
		Message:    "admitfn policy: " + string(mode) + " rules are violated",
	}
	switch mode {
	case policy.Enforce:
		// The engine's reason: the first five denials, and how many more.
		validation.Expression += ` || variables.breakGlass`
		validation.MessageExpression = fmt.Sprintf(`variables.clean ? '' : size(variables.violations) <= %[1]d ? variables.violations.join('; ') : variables.violations.slice(0, %[1]d).join('; ') + '; and ' + string(size(variables.violations) - %[1]d) + ' more'`, maxReasons)
		forbidden := metav1.StatusReasonForbidden
		validation.Reason = &forbidden
	default:
		validation.MessageExpression = `variables.clean ? '' : variables.violations.join('; ')`
	}
	fail := admissionregistrationv1.Fail
	equivalent := admissionregistrationv1.Equivalent
	return admissionregistrationv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "admitfn"}},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: &fail,
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules:     resources,
				MatchPolicy:       &equivalent,
				NamespaceSelector: g.opts.NamespaceSelector,
			},
			// The fast pass as a match condition: a pod it passes is not
			// the policy's at all, so neither the validation nor its
			// message (each of which evaluates the variables anew) runs.
			// The apiserver refuses variables in a match condition.
			MatchConditions: append(append([]admissionregistrationv1.MatchCondition(nil), g.opts.MatchConditions...),
				admissionregistrationv1.MatchCondition{Name: FastPassCondition, Expression: "!(" + fast + ")"}),
			Variables:   vars,
			Validations: []admissionregistrationv1.Validation{validation},
		},
	}, nil
}

// FastPassCondition names the policies' match condition that leaves out
// what fastPass passes.
const FastPassCondition = "admitfn-not-fast-pass"

// maxReasons is how many violations the engine's reason spells out.
const maxReasons = 5

// variables are the policy's CEL variables, in the order they may use
// one another: the pod template, its judged images, their parsed
// references, then the violations.
func (g generator) variables(mode policy.Mode, rules []policy.Rule) ([]admissionregistrationv1.Variable, error) {
	var vars []admissionregistrationv1.Variable
	add := func(name, expr string) {
		vars = append(vars, admissionregistrationv1.Variable{Name: name, Expression: expr})
	}

	// A cluster-scoped object (a Node) has no namespace: "" to the engine.
	add("ns", `has(request.namespace) ? request.namespace : ''`)
	exempt, err := anyGlob(`variables.ns`, g.spec.ExemptNamespaces)
	if err != nil {
		return nil, err
	}
	add("exempt", exempt)
	add("holdsPods", podKind())
	add("tmpl", template("object"))
	add("oldTmpl", `request.operation == 'UPDATE' && oldObject != null ? `+template("oldObject")+` : null`)
	add("prefix", `request.kind.kind in ['Pod', 'Revision'] ? 'spec' : request.kind.kind == 'PodTemplate' ? 'template.spec' : request.kind.kind == 'CronJob' ? 'spec.jobTemplate.spec.template.spec' : 'spec.template.spec'`)
	add("annotations", `variables.holdsPods ? `+annotations("variables.tmpl")+` : {}`)
	add("images", `variables.holdsPods ? `+images("variables.tmpl")+` : []`)
	// An UPDATE leaves out an image that is where it was, as it was, when
	// the annotations (break-glass) did not change: admission.Read's rule.
	add("oldKeys", `variables.holdsPods && variables.oldTmpl != null && `+annotations("variables.oldTmpl")+` == variables.annotations ? `+images("variables.oldTmpl")+`.map(i, `+judgedKey+`) : []`)
	add("judged", `variables.images.filter(i, (!has(request.subResource) || request.subResource != 'ephemeralcontainers' || i.field.contains('.ephemeralContainers[')) && (size(variables.oldKeys) == 0 || !(`+judgedKey+` in variables.oldKeys)))`)

	// Each stage's maps hold its own keys only; a later stage reads an
	// earlier one's by the image's index k (copying every key forward
	// made the parse cost three times as much).
	where := map[string]string{"ref": "judged", "field": "judged", "uid": "judged"}
	prev := "judged"
	for _, s := range referenceStages() {
		var fields []string
		for _, kv := range s.keys {
			fields = append(fields, fmt.Sprintf("'%s': %s", kv[0], reads(kv[1], "p", prev, where)))
		}
		for _, kv := range s.keys {
			where[kv[0]] = s.name
		}
		add(s.name, "variables."+prev+".transformList(k, p, {"+strings.Join(fields, ", ")+"})")
		prev = s.name
	}
	onRefs := func(expr string) string { return reads(expr, "r", "refs", where) }

	// violations lists what the engine would say; clean is true exactly
	// when it is empty, decided without building a message, so that a
	// request that passes (most do) costs the least.
	var perImage, perImageClean []string
	if mode == policy.Enforce {
		perImage = append(perImage, `(r.valid == '' ? [`+violation(mode, "image-reference", "r", `'is not an image reference the kubelet and admitfn read alike (admitfn check names the cause)'`,
			`'write a valid reference such as registry.example/team/app:1.2.3'`)+`] : [])`)
		perImageClean = append(perImageClean, `r.valid == 'y'`)
	}
	var request, requestClean []string
	for _, r := range rules {
		checks, err := imageChecks(mode, r)
		if err != nil {
			return nil, err
		}
		if len(checks) > 0 {
			scope, err := imageScope(r)
			if err != nil {
				return nil, err
			}
			var lists, whens []string
			for _, c := range checks {
				lists, whens = append(lists, c.list()), append(whens, c.when)
			}
			perImage = append(perImage, "(r.valid == 'y' && "+scope+" ? "+strings.Join(lists, " + ")+" : [])")
			perImageClean = append(perImageClean, "!(r.valid == 'y' && "+scope+" && ("+strings.Join(whens, " || ")+"))")
		}
		if r.ServiceTypes != nil {
			inNS, err := inNamespace(r, "variables.ns")
			if err != nil {
				return nil, err
			}
			typ := `(has(object.spec.type) ? object.spec.type : '')`
			c := check{
				when: `request.kind.group == '' && request.kind.kind == 'Service' && ` + inNS + ` && ` + typ + ` in ` + celList(r.ServiceTypes.Deny),
				violation: requestViolation(mode, r.Name, "spec.type", `'Service "' + request.name + '" has type ' + `+typ+` + ', which is not allowed here'`,
					celString("use a type other than "+strings.Join(r.ServiceTypes.Deny, ", ")+" (ClusterIP behind an Ingress, say)")),
			}
			request, requestClean = append(request, c.list()), append(requestClean, "!("+c.when+")")
		}
		if r.NodeRestriction {
			inNS, err := inNamespace(r, "variables.ns")
			if err != nil {
				return nil, err
			}
			for _, c := range nodeChecks(mode, r.Name, inNS) {
				request, requestClean = append(request, c.list()), append(requestClean, "!("+c.when+")")
			}
		}
	}
	violations, clean := "[]", []string{}
	if len(perImage) > 0 {
		violations = "variables.refs.transformList(k, r, " + onRefs(strings.Join(perImage, " + ")) + ").flatten()"
		clean = append(clean, "variables.refs.all(k, r, "+onRefs(strings.Join(perImageClean, " && "))+")")
	}
	if len(request) > 0 {
		violations += " + " + strings.Join(request, " + ")
		clean = append(clean, requestClean...)
	}
	if len(clean) == 0 {
		clean = []string{"true"}
	}
	add("violations", violations)
	add("clean", strings.Join(clean, " && "))

	breakGlass := "false"
	if bg := g.spec.BreakGlass; bg != nil {
		inNS, err := anyGlob(`variables.ns`, bg.Namespaces)
		if err != nil {
			return nil, err
		}
		// Only an annotation with a reason counts (strings.TrimSpace's
		// white space: unicode.IsSpace).
		breakGlass = fmt.Sprintf(`%s in variables.annotations && !variables.annotations[%[1]s].matches('^[\\t\\n\\x{0b}\\f\\r\\x{85}\\p{Z}]*$') && %s`, celString(bg.Annotation), inNS)
	}
	add("breakGlass", breakGlass)
	return vars, nil
}

// simpleTagged is the commonest reference, read at a glance: a
// repository with a tag, no digest, no host but perhaps localhost (a
// first segment with a '.' or ':' would be one), short enough for any
// length limit. Both parsers accept every such reference, and its tag is
// what follows its only ':': all a tags rule reads.
const simpleTagged = `^[a-z0-9]+(?:(?:_|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*:[\w][\w.-]{0,127}$`

// fastPass is a CEL condition that implies the mode's rules find nothing
// wrong with a pod, decided without parsing references in full: every
// image is simpleTagged and its tag passes every tags rule, in or out of
// scope. It is "false" unless all the mode's rules check tags alone;
// when it is false the full parse decides. It is the policies' match
// condition: the apiserver evaluates the variables once for the
// validation and once more for its message, and a pod the fast pass
// passes skips both.
func fastPass(rules []policy.Rule) (string, error) {
	var conds []string
	for _, r := range rules {
		if r.Registries != nil || r.Repositories != nil || r.RequireDigest {
			return "false", nil
		}
		t := r.Tags
		if t == nil {
			continue
		}
		const tag = `i.ref.substring(i.ref.indexOf(':') + 1)`
		if t.DenyLatest {
			conds = append(conds, tag+` != 'latest'`)
		}
		if len(t.Deny) > 0 {
			any, err := anyGlob(tag, t.Deny)
			if err != nil {
				return "", err
			}
			conds = append(conds, "!"+any)
		}
		if len(t.Allow) > 0 {
			any, err := anyGlob(tag, t.Allow)
			if err != nil {
				return "", err
			}
			conds = append(conds, any)
		}
	}
	all := strings.Join(append([]string{`i.ref.matches(` + celString(simpleTagged) + `)`, `size(i.ref) <= 200`}, conds...), " && ")
	// Straight over the template, without the images variable's maps.
	tmpl := template("object")
	var lists []string
	for _, list := range []string{"containers", "initContainers", "ephemeralContainers"} {
		lists = append(lists, fmt.Sprintf(`(!has(%[3]s.spec.%[1]s) || %[3]s.spec.%[1]s.all(c, has(c.image) && %[2]s))`,
			list, strings.ReplaceAll(all, "i.ref", "c.image"), tmpl))
	}
	lists = append(lists, fmt.Sprintf(`(!has(%[2]s.spec.volumes) || %[2]s.spec.volumes.all(v, !has(v.image) || has(v.image.reference) && %[1]s))`,
		strings.ReplaceAll(all, "i.ref", "v.image.reference"), tmpl))
	return podKind() + ` && ` + strings.Join(lists, " && "), nil
}

// parsedKey is a key of a parse stage read as v.key in an expression.
var parsedKey = regexp.MustCompile(`\b([pr])\.(ref|field|uid|base|at|digest|tagged|tag|name|first|domained|host|path|lhost|repository|hostonly|port|registry|repo|segs|jtag|implied|valid)\b`)

// reads rewrites expr's v.key reads for an iteration over stage own
// (bound to v, at index k): a key of another stage is read there.
func reads(expr, v, own string, where map[string]string) string {
	return parsedKey.ReplaceAllStringFunc(expr, func(m string) string {
		sub := parsedKey.FindStringSubmatch(m)
		if sub[1] != v || where[sub[2]] == own {
			return m
		}
		return "variables." + where[sub[2]] + "[k]." + sub[2]
	})
}

// judgedKey is admission.Read's judgedAs for image i: place, reference
// and uid (the place tells a volume).
const judgedKey = `i.field + '=' + i.ref + '|uid=' + i.uid`

// template is where expr (object or oldObject) keeps its pod template.
func template(expr string) string {
	return fmt.Sprintf(`(request.kind.kind in ['Pod', 'Revision'] ? %[1]s : request.kind.kind == 'PodTemplate' ? %[1]s.template : request.kind.kind == 'CronJob' ? %[1]s.spec.jobTemplate.spec.template : %[1]s.spec.template)`, expr)
}

func annotations(tmpl string) string {
	return fmt.Sprintf(`(has(%[1]s.metadata) && has(%[1]s.metadata.annotations) ? %[1]s.metadata.annotations : {})`, tmpl)
}

// images lists the images of the pod template tmpl as workload.Read
// does: containers, init and ephemeral containers, image volumes, with
// the uid each runs as (judgedKey).
func images(tmpl string) string {
	uid := func(c string) string {
		return fmt.Sprintf(`(has(%[1]s.securityContext) && has(%[1]s.securityContext.runAsUser) ? string(%[1]s.securityContext.runAsUser) : has(%[2]s.spec.securityContext) && has(%[2]s.spec.securityContext.runAsUser) ? string(%[2]s.spec.securityContext.runAsUser) : 'unset')`, c, tmpl)
	}
	var parts []string
	for _, list := range []string{"containers", "initContainers", "ephemeralContainers"} {
		field := fmt.Sprintf(`variables.prefix + '.%s[' + string(i) + '].image'`, list)
		ref := `string(has(c.image) ? c.image : '')`
		parts = append(parts, fmt.Sprintf(`(has(%[1]s.spec.%[2]s) ? %[1]s.spec.%[2]s.transformList(i, c, {'ref': %[3]s, 'field': %[4]s, 'uid': %[5]s}) : [])`,
			tmpl, list, ref, field, uid("c")))
	}
	field := `variables.prefix + '.volumes[' + string(i) + '].image.reference'`
	ref := `string(has(v.image.reference) ? v.image.reference : '')`
	parts = append(parts, fmt.Sprintf(`(has(%[1]s.spec.volumes) ? %[1]s.spec.volumes.transformList(i, v, has(v.image), {'ref': %[2]s, 'field': %[3]s, 'uid': 'unset'}) : [])`,
		tmpl, ref, field))
	return "(" + strings.Join(parts, " + ") + ")"
}

// violation is the CEL for one image's violation of a rule, in the words
// of the engine's Violation.String (enforce) or Decision.Warnings (warn,
// audit); problem and fix are CEL string expressions over r.
func violation(mode policy.Mode, rule, r, problem, fix string) string {
	if mode == policy.Enforce {
		return fmt.Sprintf(`'image "' + %[1]s.ref + '" (' + %[1]s.field + ') violates rule ' + %[2]s + ': ' + %[3]s + '; to pass, ' + %[4]s`, r, celString(strconv.Quote(rule)), problem, fix)
	}
	return fmt.Sprintf(`'admitfn rule ' + %s + ': ' + %s.ref + ': ' + %s`, celString(strconv.Quote(rule)), r, problem)
}

// requestViolation is violation for a rule on the request itself.
func requestViolation(mode policy.Mode, rule, field, problem, fix string) string {
	if mode == policy.Enforce {
		return fmt.Sprintf(`%s + ' violates rule ' + %s + ': ' + %s + '; to pass, ' + %s`, celString(field), celString(strconv.Quote(rule)), problem, fix)
	}
	return fmt.Sprintf(`'admitfn rule ' + %s + ': ' + %s + ': ' + %s`, celString(strconv.Quote(rule)), celString(field), problem)
}

// inNamespace is CompiledRule.inNamespace over ns, the request's
// namespace.
func inNamespace(r policy.Rule, ns string) (string, error) {
	in := "true"
	if len(r.Namespaces) > 0 {
		var err error
		if in, err = anyGlob(ns, r.Namespaces); err != nil {
			return "", err
		}
	}
	out, err := anyGlob(ns, r.ExemptNamespaces)
	if err != nil {
		return "", err
	}
	return "(" + in + " && !" + out + ")", nil
}

// imageScope is CompiledRule.applies over r (a parsed reference).
func imageScope(r policy.Rule) (string, error) {
	inNS, err := inNamespace(r, "variables.ns")
	if err != nil {
		return "", err
	}
	in := "true"
	if len(r.Images) > 0 {
		if in, err = anyRepo("r.segs", r.Images); err != nil {
			return "", err
		}
	}
	out, err := anyRepo("r.segs", r.ExcludeImages)
	if err != nil {
		return "", err
	}
	return "(" + inNS + " && " + in + " && !" + out + ")", nil
}

// A check is one way a rule fails an image: when (a CEL condition over
// r) and what the violation says.
type check struct{ when, violation string }

// list is the CEL list of c's violation, empty unless it fails.
func (c check) list() string { return "(" + c.when + " ? [" + c.violation + "] : [])" }

// imageChecks are one rule's checks of image r, in the engine's order
// (tags, registries, repositories, requireDigest).
func imageChecks(mode policy.Mode, rule policy.Rule) ([]check, error) {
	var out []check
	fail := func(cond, problem, fix string) {
		out = append(out, check{cond, violation(mode, rule.Name, "r", problem, fix)})
	}
	if t := rule.Tags; t != nil {
		if t.DenyUntagged {
			fail(`r.tag == '' && r.at == ''`, celString(`names no tag, so the runtime pulls the mutable tag "latest"`),
				`'name a version tag (' + r.ref + ':<version>) or a digest (' + r.ref + '@sha256:<digest>)'`)
		}
		if t.DenyLatest {
			base := `r.ref.substring(0, size(r.ref) - 7)`
			fail(`r.tag == 'latest' && r.at == ''`, celString(`uses the mutable tag "latest"`),
				`'name a version tag (' + `+base+` + ':<version>) or a digest (' + `+base+` + '@sha256:<digest>)'`)
		}
		if len(t.Deny) > 0 {
			first, err := firstGlob("r.jtag", t.Deny)
			if err != nil {
				return nil, err
			}
			fail(`r.jtag != '' && `+first+` != ''`, `'tag "' + r.jtag + '"' + r.implied + ' is denied (pattern ' + `+first+` + ')'`,
				celString("use a tag that does not match "+quoteList(t.Deny)))
		}
		if len(t.Allow) > 0 {
			allowed, err := anyGlob("r.jtag", t.Allow)
			if err != nil {
				return nil, err
			}
			fail(`r.jtag != '' && !`+allowed, `'tag "' + r.jtag + '"' + r.implied + ' is not allowed'`,
				celString("use a tag matching "+quoteList(t.Allow)))
		}
	}
	if l := rule.Registries; l != nil {
		var allow, deny []string
		for _, s := range l.Allow {
			hp, err := imageref.ParseHostPattern(s)
			if err != nil {
				return nil, err
			}
			allow = append(allow, hp.String())
		}
		for _, s := range l.Deny {
			hp, err := imageref.ParseHostPattern(s)
			if err != nil {
				return nil, err
			}
			deny = append(deny, hp.String())
		}
		if len(allow) > 0 {
			any, err := anyGlob("r.registry", allow)
			if err != nil {
				return nil, err
			}
			fail("!"+any, `'registry "' + r.registry + '" is not allowed'`, celString("use an image from "+quoteList(allow)))
		}
		if len(deny) > 0 {
			first, err := firstGlob("r.registry", deny)
			if err != nil {
				return nil, err
			}
			fail(first+` != ''`, `'registry "' + r.registry + '" is denied (pattern ' + `+first+` + ')'`, celString("use an image from another registry"))
		}
	}
	if l := rule.Repositories; l != nil {
		if len(l.Allow) > 0 {
			any, err := anyRepo("r.segs", l.Allow)
			if err != nil {
				return nil, err
			}
			var names []string
			for _, s := range l.Allow {
				rp, _ := imageref.ParseRepoPattern(s)
				names = append(names, rp.String())
			}
			fail("!"+any, `'repository "' + r.repo + '" is not allowed'`, celString("use an image from a repository matching "+quoteList(names)))
		}
		if len(l.Deny) > 0 {
			first, err := firstRepo("r.segs", l.Deny)
			if err != nil {
				return nil, err
			}
			fail(first+` != ''`, `'repository "' + r.repo + '" is denied (pattern ' + `+first+` + ')'`, celString("use an image from another repository"))
		}
	}
	if rule.RequireDigest {
		fail(`r.at == ''`, celString("is not pinned to a digest"), `'pin the image by digest: ' + r.repo + '@sha256:<digest>'`)
	}
	return out, nil
}

// anyGlob is CEL telling whether expr matches one of globs.
func anyGlob(expr string, globs []string) (string, error) {
	if len(globs) == 0 {
		return "false", nil
	}
	var res []string
	for _, g := range globs {
		re, err := globRegexp(g)
		if err != nil {
			return "", err
		}
		res = append(res, expr+".matches("+celString(re)+")")
	}
	return "(" + strings.Join(res, " || ") + ")", nil
}

// firstGlob is CEL for the first of globs that expr matches, Go-quoted
// as the engine's messages quote it, or "".
func firstGlob(expr string, globs []string) (string, error) {
	out := "''"
	for i := len(globs) - 1; i >= 0; i-- {
		re, err := globRegexp(globs[i])
		if err != nil {
			return "", err
		}
		out = fmt.Sprintf("(%s.matches(%s) ? %s : %s)", expr, celString(re), celString(strconv.Quote(globs[i])), out)
	}
	return out, nil
}

// repoRegexp is a repository pattern as one expression over a
// repository's segments, each followed by '/' ("index.docker.io/library/nginx/"):
// a glob per segment, "**" any number of whole segments.
func repoRegexp(pattern string) (string, string, error) {
	rp, err := imageref.ParseRepoPattern(pattern)
	if err != nil {
		return "", "", err
	}
	var b strings.Builder
	b.WriteString("^")
	for _, seg := range strings.Split(rp.String(), "/") {
		if seg == "**" {
			b.WriteString(`(?:[^/]+/)*`)
			continue
		}
		segment(&b, seg)
		b.WriteString("/")
	}
	b.WriteString("$")
	return b.String(), rp.String(), nil
}

func anyRepo(expr string, patterns []string) (string, error) {
	if len(patterns) == 0 {
		return "false", nil
	}
	var res []string
	for _, p := range patterns {
		re, _, err := repoRegexp(p)
		if err != nil {
			return "", err
		}
		res = append(res, expr+".matches("+celString(re)+")")
	}
	return "(" + strings.Join(res, " || ") + ")", nil
}

func firstRepo(expr string, patterns []string) (string, error) {
	out := "''"
	for i := len(patterns) - 1; i >= 0; i-- {
		re, name, err := repoRegexp(patterns[i])
		if err != nil {
			return "", err
		}
		out = fmt.Sprintf("(%s.matches(%s) ? %s : %s)", expr, celString(re), celString(strconv.Quote(name)), out)
	}
	return out, nil
}

// celString is s as a CEL string literal: Go's quoting is valid CEL.
func celString(s string) string { return strconv.Quote(s) }

func celList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = celString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// quoteList is the engine's list of quoted patterns.
func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// YAML writes the policies and bindings as one multi-document YAML
// stream, each policy followed by its binding.
func (o Output) YAML() ([]byte, error) {
	var b strings.Builder
	for i := range o.Policies {
		for _, obj := range []any{o.Policies[i], o.Bindings[i]} {
			y, err := yaml.Marshal(obj)
			if err != nil {
				return nil, err
			}
			b.WriteString("---\n")
			b.Write(y)
		}
	}
	return []byte(b.String()), nil
}

// Summary says, a line per rule, where each rule is decided and why.
func (o Output) Summary() string {
	var b strings.Builder
	for _, p := range o.Placements {
		if p.Policy != "" {
			fmt.Fprintf(&b, "rule %q: ValidatingAdmissionPolicy %s (decided in kube-apiserver)\n", p.Rule, p.Policy)
		} else {
			fmt.Fprintf(&b, "rule %q: stays with the webhook: %s\n", p.Rule, p.Why)
		}
	}
	return b.String()
}
