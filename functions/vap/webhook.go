package vap

import (
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"

	"github.com/admitfn/admitfn/functions/policy"
)

// WebhookConditionName names the match condition WebhookConditions
// writes.
const WebhookConditionName = "admitfn-registry-rules"

// WebhookConditions are the match conditions for the validating
// webhook's workload registration once doc's generated policies are in
// place: the apiserver then calls admitfn only for a request a rule that
// stays with the webhook could deny. The condition errs towards calling:
// it reads a rule's namespaces, not its image patterns (a match
// condition has no variables to parse references with), and it passes
// every kind the generated policies do not judge (declared workloads)
// untouched. It is "false" for the covered kinds when every rule moved.
func WebhookConditions(doc policy.Document) ([]admissionregistrationv1.MatchCondition, error) {
	var pods, services []string
	for _, r := range doc.Spec.Rules {
		if webhookOnly(r) == "" {
			continue
		}
		inNS, err := inNamespace(r, "request.namespace")
		if err != nil {
			return nil, err
		}
		if imageRule(r) {
			pods = append(pods, inNS)
		}
		if r.ServiceTypes != nil {
			services = append(services, inNS)
		}
	}
	exempt, err := anyGlob("request.namespace", doc.Spec.ExemptNamespaces)
	if err != nil {
		return nil, err
	}
	podKind := isPodKind()
	isService := `(request.kind.group == '' && request.kind.kind == 'Service')`
	expr := "!(" + podKind + " || " + isService + ")" +
		" || (" + podKind + " && !" + exempt + " && " + anyOf(pods) + ")" +
		" || (" + isService + " && !" + exempt + " && " + anyOf(services) + ")"
	return []admissionregistrationv1.MatchCondition{{Name: WebhookConditionName, Expression: expr}}, nil
}

// NodeWebhookNeeded reports whether a rule that stays with the webhook
// restricts kubelets: otherwise, with doc's generated policies in place,
// the node webhook's registration only calls admitfn for nothing.
func NodeWebhookNeeded(doc policy.Document) bool {
	for _, r := range doc.Spec.Rules {
		if r.NodeRestriction && webhookOnly(r) != "" {
			return true
		}
	}
	return false
}

// isPodKind is CEL telling whether the request is on one of podKinds:
// with the policies in place, the webhook need not see these where no
// rule that stays with it applies.
func isPodKind() string {
	var groups []string
	kinds := map[string][]string{}
	for _, k := range podKinds {
		if _, ok := kinds[k.group]; !ok {
			groups = append(groups, k.group)
		}
		kinds[k.group] = append(kinds[k.group], k.kind)
	}
	var covered []string
	for _, group := range groups {
		covered = append(covered, "(request.kind.group == "+celString(group)+" && request.kind.kind in "+celList(kinds[group])+")")
	}
	return "(" + strings.Join(covered, " || ") + ")"
}

// imageRule reports whether r carries checks on images (any field but
// nodeRestriction and serviceTypes).
func imageRule(r policy.Rule) bool {
	return r.Tags != nil || r.Registries != nil || r.Repositories != nil || r.RequireDigest || webhookOnly(r) != ""
}

func anyOf(conds []string) string {
	if len(conds) == 0 {
		return "false"
	}
	return "(" + strings.Join(conds, " || ") + ")"
}
