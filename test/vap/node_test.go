package vap

import (
	"math/rand/v2"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
)

// nodePolicies put the node restriction in each mode, and once scoped to
// namespaces (a Node has none: "" to the engine, so the rule is out of
// scope unless a glob matches the empty name).
var nodePolicies = map[string]string{
	"enforce": "apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: nodes}\nspec:\n  rules:\n  - {name: node-restriction, nodeRestriction: true}\n",
	"warn":    "apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: nodes}\nspec:\n  rules:\n  - {name: node-restriction, mode: warn, nodeRestriction: true}\n  - {name: no-latest, tags: {denyLatest: true}}\n",
	"scoped":  "apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: nodes}\nspec:\n  rules:\n  - {name: node-restriction, namespaces: [\"prod-*\"], nodeRestriction: true}\n  - {name: everywhere, namespaces: [\"*\"], nodeRestriction: true}\n",
}

// TestGeneratedPoliciesOnNodes holds the node restriction in CEL to the
// engine on kubelets' and others' requests on Nodes: their own and other
// Nodes, CREATE, UPDATE and DELETE, labels a kubelet may and may not
// set, taints, owner references, config sources, absent and empty fields.
func TestGeneratedPoliciesOnNodes(t *testing.T) {
	labelSets := []map[string]any{
		nil, {},
		{"kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux", "topology.kubernetes.io/zone": "z"},
		{"node-restriction.kubernetes.io/pool": "gpu"},
		{"sub.node-restriction.kubernetes.io/x": "1"},
		{"node-role.kubernetes.io/control-plane": ""},
		{"kubelet.kubernetes.io/x": "1", "node.kubernetes.io/instance-type": "m5", "x.kubelet.kubernetes.io/y": "2"},
		{"example.com/team": "a", "plain": "b"},
		{"k8s.io/a": "1", "kubernetes.io/zz": "2", "beta.kubernetes.io/arch": "amd64", "failure-domain.beta.kubernetes.io/zone": "z"},
		{"node-restriction.kubernetes.io/pool": "cpu", "kubernetes.io/hostname": "n2"},
	}
	specs := []map[string]any{
		nil, {}, {"taints": []any{}}, {"taints": []any{map[string]any{"key": "k", "effect": "NoSchedule"}}},
		{"taints": []any{map[string]any{"key": "k", "effect": "NoExecute"}}},
		{"configSource": map[string]any{"configMap": map[string]any{"name": "c", "namespace": "kube-system", "kubeletConfigKey": "k"}}},
		{"configSource": map[string]any{"configMap": map[string]any{"name": "d", "namespace": "kube-system", "kubeletConfigKey": "k"}}},
		{"podCIDR": "10.0.0.0/24"},
	}
	owners := []any{nil, []any{}, []any{map[string]any{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "u"}}}
	users := []struct {
		name   string
		groups []string
	}{
		{"system:node:n1", []string{"system:nodes", "system:authenticated"}},
		{"system:node:n1", nil},
		{"system:node:", []string{"system:nodes"}},
		{"system:node:n2", []string{"system:nodes"}},
		{"admin", []string{"system:masters"}},
	}
	nodeObject := func(name string, labels, spec map[string]any, owner any) map[string]any {
		meta := map[string]any{"name": name}
		if labels != nil {
			meta["labels"] = labels
		}
		if owner != nil {
			meta["ownerReferences"] = owner
		}
		obj := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": meta}
		if spec != nil {
			obj["spec"] = spec
		}
		return obj
	}
	rng := rand.New(rand.NewPCG(2, 2))
	pick := func(n int) int { return rng.IntN(n) }
	for name, doc := range nodePolicies {
		t.Run(name, func(t *testing.T) {
			p, compiled := generate(t, doc)
			const n = 1200
			denied := 0
			for i := range n {
				u := users[pick(len(users))]
				target := []string{"n1", "n2"}[pick(2)]
				r := request{
					gvk: schema.GroupVersionKind{Version: "v1", Kind: "Node"}, gvr: schema.GroupVersionResource{Version: "v1", Resource: "nodes"},
					name: target, user: u.name, groups: u.groups,
				}
				switch i % 3 {
				case 0:
					r.op = admission.Create
					r.object = nodeObject(target, labelSets[pick(len(labelSets))], specs[pick(len(specs))], owners[pick(len(owners))])
				case 1:
					r.op = admission.Update
					r.object = nodeObject(target, labelSets[pick(len(labelSets))], specs[pick(len(specs))], owners[pick(len(owners))])
					r.old = nodeObject(target, labelSets[pick(len(labelSets))], specs[pick(len(specs))], owners[pick(len(owners))])
					if pick(3) == 0 { // the same Node again: nothing changed
						r.old = r.object
					}
				case 2:
					r.op = admission.Delete
					r.old = nodeObject(target, labelSets[pick(len(labelSets))], nil, nil)
				}
				if compare(t, p, compiled, r) {
					denied++
				}
			}
			if name != "warn" && (denied == 0 || denied == n) {
				t.Fatalf("%d of %d denied", denied, n)
			}
			t.Logf("%d requests on Nodes, %d denied, no disagreement", n, denied)
		})
	}
}
