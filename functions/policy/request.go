package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"
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
	if r.NodeRestriction && req.Node != nil && (req.Operation == "CREATE" || req.Operation == "UPDATE") {
		if node, ok := kubeletNode(req.User); ok {
			if req.Name != node {
				add("metadata.name", fmt.Sprintf("node %q may not modify node %q", node, req.Name),
					"change other Nodes with an administrator's credentials, not a kubelet's")
			} else if keys := restrictedLabelChanges(req.Node.OldLabels, req.Node.NewLabels); len(keys) > 0 {
				add("metadata.labels", fmt.Sprintf("node %q may not add, change or remove its labels %s", node, strings.Join(keys, ", ")),
					"have an administrator set labels under "+nodeRestrictionDomain+"/")
			}
		}
	}
	if len(r.DenyServiceTypes) > 0 && req.Kind == "Service" && slices.Contains(r.DenyServiceTypes, req.ServiceType) {
		add("spec.type", fmt.Sprintf("Service %q has type %s, which is not allowed here", req.Name, req.ServiceType),
			"use a type other than "+strings.Join(r.DenyServiceTypes, ", ")+" (ClusterIP behind an Ingress, say)")
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

// restrictedLabelChanges lists the restricted label keys that differ
// between old and new, quoted and sorted.
func restrictedLabelChanges(old, new map[string]string) []string {
	var keys []string
	for k, v := range new {
		if restricted(k) {
			if ov, ok := old[k]; !ok || ov != v {
				keys = append(keys, fmt.Sprintf("%q", k))
			}
		}
	}
	for k := range old {
		if _, ok := new[k]; !ok && restricted(k) {
			keys = append(keys, fmt.Sprintf("%q", k))
		}
	}
	sort.Strings(keys)
	return keys
}

func restricted(key string) bool {
	domain, _, ok := strings.Cut(key, "/")
	return ok && (domain == nodeRestrictionDomain || strings.HasSuffix(domain, "."+nodeRestrictionDomain))
}
