package policy

import (
	"os"
	"testing"
	"time"
)

// FuzzParse checks that any document either parses into a policy the
// engine can run or is refused with an error, never a panic.
func FuzzParse(f *testing.F) {
	f.Add(DefaultYAML())
	if b, err := os.ReadFile("testdata/strict.yaml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\nspec: {rules: [{name: a, maxAge: 30d}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		req := Request{Namespace: "default", Images: []Image{{Ref: "nginx"}, {Ref: "registry.corp/app:1"}}, Kind: "Node", Operation: "UPDATE",
			Node: &NodeChange{}, User: &User{Name: "system:node:a", Groups: []string{"system:nodes"}}}
		p.Evaluate(req, nil, time.Now())
	})
}
