package vap

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/admitfn/admitfn/functions/policy"
)

// kubeletLabels are the label keys, and kubeletLabelDomains the label
// namespaces, a kubelet may set on its own Node (k8s.io/kubelet's
// IsKubeletLabel, as policy's nodeRestriction reads it).
var (
	kubeletLabels = []string{
		corev1.LabelHostname, corev1.LabelTopologyZone, corev1.LabelTopologyRegion,
		corev1.LabelFailureDomainBetaZone, corev1.LabelFailureDomainBetaRegion,
		corev1.LabelInstanceType, corev1.LabelInstanceTypeStable, corev1.LabelOSStable, corev1.LabelArchStable,
		"beta.kubernetes.io/os", "beta.kubernetes.io/arch",
	}
	kubeletLabelDomains = []string{corev1.LabelNamespaceSuffixKubelet, corev1.LabelNamespaceSuffixNode}
)

// nodeChecks are the nodeRestriction rule's checks of a request on a
// Node, in the engine's order, as CEL over request, object and oldObject:
// a kubelet (system:node:<name> in system:nodes) may create, change or
// delete only its own Node; on CREATE set no configSource; on UPDATE set
// no new configSource and change neither taints nor ownerReferences; and
// add, change or remove no label under node-restriction.kubernetes.io/
// nor a kubernetes.io or k8s.io label that is not a kubelet's. Absent and
// empty compare alike, as the engine's semantic equality has them.
func nodeChecks(mode policy.Mode, rule, inNS string) []check {
	const (
		kubelet = `(has(request.userInfo.groups) && 'system:nodes' in request.userInfo.groups && request.userInfo.username.startsWith('system:node:') && size(request.userInfo.username) > 12)`
		node    = `request.userInfo.username.substring(12)`
		admin   = "change it with an administrator's credentials, not a kubelet's"
	)
	base := `request.kind.group == '' && request.kind.kind == 'Node' && ` + inNS + ` && ` + kubelet
	own := base + ` && request.name == ` + node
	quoted := func(expr string) string { return `'"' + ` + expr + ` + '"'` }
	or := func(obj, path, empty string) string {
		// obj.path, or empty when obj or a step of path is absent.
		steps := strings.Split(path, ".")
		var guards []string
		for i := range steps {
			guards = append(guards, "has("+obj+"."+strings.Join(steps[:i+1], ".")+")")
		}
		return "(" + strings.Join(guards, " && ") + " ? " + obj + "." + path + " : " + empty + ")"
	}
	labels := func(obj string) string { return or(obj, "metadata.labels", "{}") }
	forbidden := func(k string) string {
		ns := k + `.split('/')[0]`
		in := func(d string) string {
			return "(" + ns + " == " + celString(d) + " || " + ns + ".endsWith(" + celString("."+d) + "))"
		}
		var kubeletDomain []string
		for _, d := range kubeletLabelDomains {
			kubeletDomain = append(kubeletDomain, in(d))
		}
		return "(" + k + ".contains('/') && (" + in("node-restriction.kubernetes.io") + " || (" + in("kubernetes.io") + " || " + in("k8s.io") + ") && !(" +
			k + " in " + celList(kubeletLabels) + " || " + strings.Join(kubeletDomain, " || ") + ")))"
	}
	newLabels, oldLabels := labels("object"), `(request.operation == 'UPDATE' ? `+labels("oldObject")+` : {})`
	changed := newLabels + `.filter(k, ` + forbidden("k") + ` && (!(k in ` + oldLabels + `) || ` + oldLabels + `[k] != ` + newLabels + `[k]))`
	removed := oldLabels + `.filter(k, ` + forbidden("k") + ` && !(k in ` + newLabels + `))`
	violation := func(field, problem, fix string) string { return requestViolation(mode, rule, field, problem, fix) }
	return []check{
		{base + ` && request.name != ` + node, violation("metadata.name",
			`'node ' + `+quoted(node)+` + ' may not modify node ' + `+quoted("request.name"),
			celString("change other Nodes with an administrator's credentials, not a kubelet's"))},
		{own + ` && request.operation == 'CREATE' && ` + or("object", "spec.configSource", "null") + ` != null`, violation("spec.configSource",
			`'node ' + `+quoted(node)+` + ' may not create its Node with a configSource'`, celString(admin))},
		{own + ` && request.operation == 'UPDATE' && ` + or("object", "spec.configSource", "null") + ` != null && ` + or("object", "spec.configSource", "null") + ` != ` + or("oldObject", "spec.configSource", "null"), violation("spec.configSource",
			`'node ' + `+quoted(node)+` + ' may not set a new configSource'`, celString(admin))},
		{own + ` && request.operation == 'UPDATE' && ` + or("object", "spec.taints", "[]") + ` != ` + or("oldObject", "spec.taints", "[]"), violation("spec.taints",
			`'node ' + `+quoted(node)+` + ' may not modify its taints'`, celString(admin))},
		{own + ` && request.operation == 'UPDATE' && ` + or("object", "metadata.ownerReferences", "[]") + ` != ` + or("oldObject", "metadata.ownerReferences", "[]"), violation("metadata.ownerReferences",
			`'node ' + `+quoted(node)+` + ' may not modify its ownerReferences'`, celString(admin))},
		{own + ` && request.operation in ['CREATE', 'UPDATE'] && size(` + changed + ` + ` + removed + `) > 0`, violation("metadata.labels",
			fmt.Sprintf(`'node ' + %s + ' may not add, change or remove its labels ' + (%s + %s).sort().map(k, '"' + k + '"').join(', ')`, quoted(node), changed, removed),
			celString("have an administrator set labels under node-restriction.kubernetes.io/ and kubernetes.io labels other than the ones kubelets set"))},
	}
}
