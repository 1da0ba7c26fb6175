package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// nodeRestrictionDomain is the label domain only administrators may set on
// Nodes, so that workloads can trust labels a compromised kubelet cannot
// forge (the NodeRestriction plugin's rule).
const nodeRestrictionDomain = "node-restriction.kubernetes.io"

// requestViolations applies the rules that judge the request itself rather
// than its images.
func requestViolations(r *CompiledRule, req Request) []Violation {
	var out []Violation
	add := func(field, problem, fix string) {
		out = append(out, Violation{Rule: r.Name, Mode: r.Mode, Field: field, Problem: problem, Fix: fix})
	}
	if r.NodeRestriction && req.Node != nil {
		out = append(out, nodeRestriction(r, req)...)
	}
	if len(r.DenyServiceTypes) > 0 && req.Kind == "Service" && slices.Contains(r.DenyServiceTypes, req.ServiceType) {
		add("spec.type", fmt.Sprintf("Service %q has type %s, which is not allowed here", req.Name, req.ServiceType),
			"use a type other than "+strings.Join(r.DenyServiceTypes, ", ")+" (ClusterIP behind an Ingress, say)")
	}
	return out
}

// nodeRestriction is kube-apiserver's NodeRestriction plugin's rule for
// Nodes, as far as a webhook sees it: a kubelet may create, change or
// delete only its own Node; may not set a config source, change taints or
// owner references; and may set no label under node-restriction.kubernetes.io
// nor any kubernetes.io or k8s.io label other than the ones kubelets set
// (hostname, os, arch, instance type, zone, region, and the kubelet. and
// node. namespaces). It does not see nodes/status, which the plugin also
// judges: a webhook registered there would make every kubelet status
// update wait on admitfn.
func nodeRestriction(r *CompiledRule, req Request) []Violation {
	node, ok := kubeletNode(req.User)
	if !ok {
		return nil
	}
	var out []Violation
	add := func(field, problem, fix string) {
		out = append(out, Violation{Rule: r.Name, Mode: r.Mode, Field: field, Problem: problem, Fix: fix})
	}
	const admin = "change it with an administrator's credentials, not a kubelet's"
	if req.Name != node {
		add("metadata.name", fmt.Sprintf("node %q may not modify node %q", node, req.Name),
			"change other Nodes with an administrator's credentials, not a kubelet's")
		return out
	}
	c := req.Node
	switch req.Operation {
	case "CREATE":
		if c.ConfigSourceSet {
			add("spec.configSource", fmt.Sprintf("node %q may not create its Node with a configSource", node), admin)
		}
	case "UPDATE":
		if c.ConfigSourceSet {
			add("spec.configSource", fmt.Sprintf("node %q may not set a new configSource", node), admin)
		}
		if c.TaintsChanged {
			add("spec.taints", fmt.Sprintf("node %q may not modify its taints", node), admin)
		}
		if c.OwnerReferencesChanged {
			add("metadata.ownerReferences", fmt.Sprintf("node %q may not modify its ownerReferences", node), admin)
		}
	default:
		return out
	}
	if keys := forbiddenLabelChanges(c.OldLabels, c.NewLabels); len(keys) > 0 {
		add("metadata.labels", fmt.Sprintf("node %q may not add, change or remove its labels %s", node, strings.Join(keys, ", ")),
			"have an administrator set labels under "+nodeRestrictionDomain+"/ and kubernetes.io labels other than the ones kubelets set")
	}
	return out
}

// kubeletNode returns the node a kubelet identity speaks for.
func kubeletNode(u *User) (string, bool) {
	if u == nil || !slices.Contains(u.Groups, "system:nodes") {
		return "", false
	}
	name, ok := strings.CutPrefix(u.Name, "system:node:")
	return name, ok && name != ""
}

// forbiddenLabelChanges lists the label keys a kubelet may not add,
// change or remove that differ between old and new, quoted and sorted.
func forbiddenLabelChanges(old, new map[string]string) []string {
	var keys []string
	for k, v := range new {
		if ov, ok := old[k]; (!ok || ov != v) && forbiddenForKubelets(k) {
			keys = append(keys, fmt.Sprintf("%q", k))
		}
	}
	for k := range old {
		if _, ok := new[k]; !ok && forbiddenForKubelets(k) {
			keys = append(keys, fmt.Sprintf("%q", k))
		}
	}
	sort.Strings(keys)
	return keys
}

// forbiddenForKubelets is the plugin's label rule: node-restriction
// labels, and kubernetes.io / k8s.io labels that are not kubelet labels.
func forbiddenForKubelets(key string) bool {
	ns, _, ok := strings.Cut(key, "/")
	if !ok {
		return false
	}
	inDomain := func(d string) bool { return ns == d || strings.HasSuffix(ns, "."+d) }
	if inDomain(nodeRestrictionDomain) {
		return true
	}
	return (inDomain("kubernetes.io") || inDomain("k8s.io")) && !kubeletLabel(key, ns)
}

// kubeletLabel reports whether kubelets may set key on their own Node
// (the list k8s.io/kubelet's IsKubeletLabel keeps).
func kubeletLabel(key, ns string) bool {
	switch key {
	case corev1.LabelHostname, corev1.LabelTopologyZone, corev1.LabelTopologyRegion,
		corev1.LabelFailureDomainBetaZone, corev1.LabelFailureDomainBetaRegion,
		corev1.LabelInstanceType, corev1.LabelInstanceTypeStable, corev1.LabelOSStable, corev1.LabelArchStable,
		"beta.kubernetes.io/os", "beta.kubernetes.io/arch":
		return true
	}
	for _, allowed := range []string{corev1.LabelNamespaceSuffixKubelet, corev1.LabelNamespaceSuffixNode} {
		if ns == allowed || strings.HasSuffix(ns, "."+allowed) {
			return true
		}
	}
	return false
}
