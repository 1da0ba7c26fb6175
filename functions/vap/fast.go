package vap

import (
	"fmt"
	"strings"

	"github.com/admitfn/admitfn/functions/policy"
)

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
	return isPodKind() + ` && ` + strings.Join(lists, " && "), nil
}
