package policy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNodeRestriction(t *testing.T) {
	p := Default()
	kubelet := &User{Name: "system:node:node01", Groups: []string{"system:nodes", "system:authenticated"}}
	labels := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	base := labels("kubernetes.io/hostname", "node01", "node-restriction.kubernetes.io/zone", "a")
	tests := []struct {
		name    string
		user    *User
		op      string
		node    string
		old     map[string]string
		new     map[string]string
		allowed bool
		problem string
	}{
		{"kubelet labels another node", kubelet, "UPDATE", "controlplane", labels(), labels("killercoda/one", "123"), false, `node "node01" may not modify node "controlplane"`},
		{"kubelet adds a restricted label to itself", kubelet, "UPDATE", "node01", base, labels("kubernetes.io/hostname", "node01", "node-restriction.kubernetes.io/zone", "a", "node-restriction.kubernetes.io/one", "123"), false, `"node-restriction.kubernetes.io/one"`},
		{"kubelet changes a restricted label", kubelet, "UPDATE", "node01", base, labels("kubernetes.io/hostname", "node01", "node-restriction.kubernetes.io/zone", "b"), false, `"node-restriction.kubernetes.io/zone"`},
		{"kubelet removes a restricted label", kubelet, "UPDATE", "node01", base, labels("kubernetes.io/hostname", "node01"), false, `"node-restriction.kubernetes.io/zone"`},
		{"subdomain is restricted too", kubelet, "UPDATE", "node01", base, labels("kubernetes.io/hostname", "node01", "node-restriction.kubernetes.io/zone", "a", "x.node-restriction.kubernetes.io/y", "1"), false, `"x.node-restriction.kubernetes.io/y"`},
		{"kubelet registers with a restricted label", kubelet, "CREATE", "node01", nil, labels("node-restriction.kubernetes.io/one", "1"), false, `"node-restriction.kubernetes.io/one"`},
		{"kubelet sets an ordinary label on itself", kubelet, "UPDATE", "node01", base, labels("kubernetes.io/hostname", "node01", "node-restriction.kubernetes.io/zone", "a", "killercoda/one", "123"), true, ""},
		// The plugin forbids every kubernetes.io label a kubelet does not set
		// itself, lookalikes of node-restriction included.
		{"lookalike domain is still kubernetes.io", kubelet, "UPDATE", "node01", base, labels("kubernetes.io/hostname", "node01", "node-restriction.kubernetes.io/zone", "a", "evil-node-restriction.kubernetes.io/x", "1"), false, `"evil-node-restriction.kubernetes.io/x"`},
		{"kubelet labels", kubelet, "UPDATE", "node01", base, labels("kubernetes.io/hostname", "node01", "node-restriction.kubernetes.io/zone", "a", "topology.kubernetes.io/zone", "z", "kubelet.kubernetes.io/x", "1", "a.node.kubernetes.io/y", "2", "kubernetes.io/os", "linux"), true, ""},
		{"other kubernetes.io and k8s.io labels", kubelet, "UPDATE", "node01", base, labels("kubernetes.io/hostname", "node01", "node-restriction.kubernetes.io/zone", "a", "kubernetes.io/custom", "1", "example.k8s.io/x", "1"), false, `"example.k8s.io/x", "kubernetes.io/custom"`},
		{"create with a forbidden label", kubelet, "CREATE", "node01", nil, labels("node-role.kubernetes.io/control-plane", ""), false, `"node-role.kubernetes.io/control-plane"`},
		{"administrator labels any node", &User{Name: "admin", Groups: []string{"system:masters"}}, "UPDATE", "controlplane", labels(), labels("node-restriction.kubernetes.io/one", "1"), true, ""},
		{"node name without the group is not a kubelet", &User{Name: "system:node:node01"}, "UPDATE", "controlplane", labels(), labels("a", "b"), true, ""},
		{"a kubelet deletes another node", kubelet, "DELETE", "controlplane", labels(), nil, false, `may not modify node "controlplane"`},
		{"a kubelet deletes its own node", kubelet, "DELETE", "node01", labels(), nil, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := Request{Kind: "Node", Name: tc.node, Operation: tc.op, User: tc.user, Node: &NodeChange{OldLabels: tc.old, NewLabels: tc.new}}
			d := p.Evaluate(req, nil, now)
			if d.Allowed != tc.allowed {
				t.Fatalf("Allowed = %v, want %v; reason %q", d.Allowed, tc.allowed, d.Reason())
			}
			if !strings.Contains(d.Reason(), tc.problem) || (!tc.allowed && !strings.Contains(d.Reason(), `violates rule "node-restriction"`)) {
				t.Errorf("Reason() = %q, want it to contain %q and name the rule", d.Reason(), tc.problem)
			}
		})
	}
}

// TestNodeRestrictionFields: taints, owner references and a config source
// are the administrator's, as in the NodeRestriction plugin.
func TestNodeRestrictionFields(t *testing.T) {
	p := mustParse(t, "  rules:\n  - name: node-restriction\n    nodeRestriction: true\n")
	kubelet := &User{Name: "system:node:node01", Groups: []string{"system:nodes", "system:authenticated"}}
	for _, tc := range []struct {
		op      string
		change  NodeChange
		problem string
	}{
		{"UPDATE", NodeChange{TaintsChanged: true}, "may not modify its taints"},
		{"UPDATE", NodeChange{OwnerReferencesChanged: true}, "may not modify its ownerReferences"},
		{"UPDATE", NodeChange{ConfigSourceSet: true}, "may not set a new configSource"},
		{"CREATE", NodeChange{ConfigSourceSet: true}, "may not create its Node with a configSource"},
	} {
		t.Run(tc.problem, func(t *testing.T) {
			change := tc.change
			d := p.Evaluate(Request{Kind: "Node", Name: "node01", Operation: tc.op, User: kubelet, Node: &change}, nil, now)
			if d.Allowed || !strings.Contains(d.Reason(), tc.problem) {
				t.Errorf("Allowed=%v Reason=%q, want a denial saying %q", d.Allowed, d.Reason(), tc.problem)
			}
			admin := &User{Name: "admin", Groups: []string{"system:masters"}}
			if d := p.Evaluate(Request{Kind: "Node", Name: "node01", Operation: tc.op, User: admin, Node: &change}, nil, now); !d.Allowed {
				t.Errorf("an administrator was denied: %s", d.Reason())
			}
		})
	}
}

func TestServiceTypes(t *testing.T) {
	p := mustParse(t, `
  rules:
  - name: no-load-balancers
    namespaces: [team-*]
    serviceTypes: {deny: [LoadBalancer]}
`)
	tests := []struct {
		ns, svcType string
		want        outcome
	}{
		{"team-a", "LoadBalancer", outcome{Violations: []string{"no-load-balancers/enforce: spec.type"}}},
		{"team-a", "ClusterIP", outcome{Allowed: true}},
		{"kube-system", "LoadBalancer", outcome{Allowed: true}},
	}
	for _, tc := range tests {
		t.Run(tc.ns+"/"+tc.svcType, func(t *testing.T) {
			d := p.Evaluate(Request{Kind: "Service", Name: "web", Namespace: tc.ns, Operation: "CREATE", ServiceType: tc.svcType}, nil, now)
			if diff := cmp.Diff(tc.want, summarize(d)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if !d.Allowed && !strings.Contains(d.Reason(), `spec.type violates rule "no-load-balancers": Service "web" has type LoadBalancer`) {
				t.Errorf("Reason() = %q", d.Reason())
			}
		})
	}
}

func TestMutationSettings(t *testing.T) {
	p := mustParse(t, `
  mutation:
    namespaces: [team-*]
    pinDigests: true
  rules:
  - name: no-latest
    tags: {denyLatest: true}
`)
	if !p.MutatesIn("team-a") || p.MutatesIn("default") {
		t.Errorf("MutatesIn: team-a %v, default %v; want true, false", p.MutatesIn("team-a"), p.MutatesIn("default"))
	}
	if p.Mutation.PinForm != PinTagAndDigest {
		t.Errorf("PinForm = %q, want the default %q", p.Mutation.PinForm, PinTagAndDigest)
	}
	if Default().MutatesIn("default") {
		t.Error("the default policy mutates; mutation must be opt-in")
	}
}
