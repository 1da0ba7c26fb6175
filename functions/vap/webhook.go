package vap

import (
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"

	"github.com/admitfn/admitfn/functions/policy"
)

// WebhookConditionName names the match condition WebhookConditions
// writes.
const WebhookConditionName = "admitfn-registry-rules"

// coveredPodKinds are the pod-holding kinds the generated policies judge,
// by API group: with them in place, the webhook need not see these kinds
// where no rule that stays with it applies.
var coveredPodKinds = map[string][]string{
	"":                    {"Pod", "PodTemplate", "ReplicationController"},
	"apps":                {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"},
	"batch":               {"Job", "CronJob"},
	"serving.knative.dev": {"Service", "Configuration", "Revision"},
}

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
	isPodKind := podKind()
	isService := `(request.kind.group == '' && request.kind.kind == 'Service')`
	expr := "!(" + isPodKind + " || " + isService + ")" +
		" || (" + isPodKind + " && !" + exempt + " && " + anyOf(pods) + ")" +
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

// podKind is CEL telling whether the request is on one of the
// coveredPodKinds.
func podKind() string {
	var covered []string
	for _, group := range []string{"", "apps", "batch", "serving.knative.dev"} {
		covered = append(covered, "(request.kind.group == "+celString(group)+" && request.kind.kind in "+celList(coveredPodKinds[group])+")")
	}
	return "(" + strings.Join(covered, " || ") + ")"
}

// imageRule reports whether r carries checks on images (any field but
// nodeRestriction and serviceTypes).
func imageRule(r policy.Rule) bool {
	r.NodeRestriction, r.ServiceTypes = false, nil
	r.Name, r.Mode, r.OnRegistryError, r.OnRegistryUnauthorized = "", "", "", ""
	r.Namespaces, r.ExemptNamespaces, r.Images, r.ExcludeImages = nil, nil, nil, nil
	return r.Tags != nil || r.Registries != nil || r.Repositories != nil || r.RequireDigest || webhookOnly(r) != ""
}

func anyOf(conds []string) string {
	if len(conds) == 0 {
		return "false"
	}
	return "(" + strings.Join(conds, " || ") + ")"
}
