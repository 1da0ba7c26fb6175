// Package vap writes a policy's name-only rules as ValidatingAdmissionPolicies,
// so that kube-apiserver decides them in process, with no webhook call.
//
// A rule goes to a ValidatingAdmissionPolicy only when CEL can decide it
// exactly as the engine does: tags, registries, repositories,
// requireDigest, serviceTypes and nodeRestriction, scoped by namespaces
// and images. A rule that needs registry facts (signatures, digests,
// image configs) stays with the webhook, never approximated. References
// are parsed in CEL as imageref.Parse parses them (reference.go), rules
// become CEL in checks.go and node.go, the common passing pod is decided
// at a glance (fast.go), and webhook.go limits the webhook to what stays
// with it. The generated policies are held to the engine by a
// differential test in test/vap that runs them with the apiserver's own
// admission-policy libraries.
package vap

import (
	"fmt"
	"regexp"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/webhookconfig"
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
	// Notes are what the policies leave to the webhook besides rules.
	Notes []string
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
	if len(doc.Spec.Workloads) > 0 {
		var kinds []string
		for _, w := range doc.Spec.Workloads {
			kinds = append(kinds, w.Kind+"."+w.APIGroup)
		}
		out.Notes = append(out.Notes, "spec.workloads declares "+strings.Join(kinds, ", ")+": the policies do not judge these kinds (their resources are not known here); keep the validating webhook registered for them (webhook-config --with-vap passes them to it)")
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
		name += webhookconfig.StaticSuffix
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

// podKind is one of workload's built-in kinds, whose objects hold a pod
// (template): what the policies match, how CEL finds the template.
type podKind struct {
	group, version, kind, resource string
	// template is the dotted path of the pod template in the object, ""
	// for the object itself (as workload's built-in paths).
	template string
}

// podKinds are the kinds the generated policies judge, in the order the
// webhook registration lists them.
var podKinds = []podKind{
	{"", "v1", "Pod", "pods", ""},
	{"", "v1", "PodTemplate", "podtemplates", "template"},
	{"", "v1", "ReplicationController", "replicationcontrollers", "spec.template"},
	{"apps", "v1", "Deployment", "deployments", "spec.template"},
	{"apps", "v1", "ReplicaSet", "replicasets", "spec.template"},
	{"apps", "v1", "StatefulSet", "statefulsets", "spec.template"},
	{"apps", "v1", "DaemonSet", "daemonsets", "spec.template"},
	{"batch", "v1", "Job", "jobs", "spec.template"},
	{"batch", "v1", "CronJob", "cronjobs", "spec.jobTemplate.spec.template"},
	{"serving.knative.dev", "*", "Service", "services", "spec.template"},
	{"serving.knative.dev", "*", "Configuration", "configurations", "spec.template"},
	{"serving.knative.dev", "*", "Revision", "revisions", ""},
}

// defaultTemplate is where most kinds keep their pod template.
const defaultTemplate = "spec.template"

// podResources are podKinds' resources, a rule per API group; a Pod's
// ephemeral containers come through their subresource.
func podResources() []admissionregistrationv1.NamedRuleWithOperations {
	var rules []admissionregistrationv1.NamedRuleWithOperations
	for _, k := range podKinds {
		if n := len(rules); n == 0 || rules[n-1].APIGroups[0] != k.group {
			rules = append(rules, rule(k.group, k.version, nil))
		}
		r := &rules[len(rules)-1]
		r.Resources = append(r.Resources, k.resource)
		if k.kind == "Pod" {
			r.Resources = append(r.Resources, "pods/ephemeralcontainers")
		}
	}
	return rules
}

// byTemplate is CEL choosing, by the request's kind, among what at
// gives for each template path of podKinds, at(defaultTemplate) for the
// rest.
func byTemplate(at func(path string) string) string {
	var paths []string
	kinds := map[string][]string{}
	for _, k := range podKinds {
		if k.template == defaultTemplate {
			continue
		}
		if _, ok := kinds[k.template]; !ok {
			paths = append(paths, k.template)
		}
		kinds[k.template] = append(kinds[k.template], k.kind)
	}
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "request.kind.kind in %s ? %s : ", celList(kinds[p]), at(p))
	}
	return "(" + b.String() + at(defaultTemplate) + ")"
}

func rule(group, version string, resources []string) admissionregistrationv1.NamedRuleWithOperations {
	return admissionregistrationv1.NamedRuleWithOperations{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
		Rule:       admissionregistrationv1.Rule{APIGroups: []string{group}, APIVersions: []string{version}, Resources: resources},
	}}
}

func (g generator) policy(name string, mode policy.Mode, rules []policy.Rule) (admissionregistrationv1.ValidatingAdmissionPolicy, error) {
	resources := podResources()
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
	add("holdsPods", isPodKind())
	add("tmpl", template("object"))
	add("oldTmpl", `request.operation == 'UPDATE' && oldObject != null ? `+template("oldObject")+` : null`)
	add("prefix", byTemplate(func(path string) string { return celString(strings.TrimPrefix(path+".spec", ".")) }))
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
	return byTemplate(func(path string) string { return strings.TrimSuffix(expr+"."+path, ".") })
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
