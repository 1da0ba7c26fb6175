package vap

import (
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

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
	for _, n := range o.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	return b.String()
}
