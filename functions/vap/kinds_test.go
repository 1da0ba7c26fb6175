package vap

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/admitfn/admitfn/functions/workload"
)

// TestPodKindsAreWorkloads holds podKinds to the engine's own reading of
// objects (workload.Read): every kind the policies judge is one the
// webhook judges, with its pod template where the table says.
func TestPodKindsAreWorkloads(t *testing.T) {
	for _, k := range podKinds {
		t.Run(k.kind, func(t *testing.T) {
			// The object, with a pod template holding one container at
			// k.template.
			var obj any = map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"image": "nginx:1.17.1"}}}}
			if k.template != "" {
				path := strings.Split(k.template, ".")
				for i := len(path) - 1; i >= 0; i-- {
					obj = map[string]any{path[i]: obj}
				}
			}
			raw, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			key := workload.Key(k.group, k.kind)
			if !workload.HoldsPods(nil, key) {
				t.Fatalf("%s is not a kind workload reads", key)
			}
			got, err := workload.Read(nil, key, raw)
			if err != nil {
				t.Fatal(err)
			}
			want := strings.TrimPrefix(k.template+".spec.containers[0].image", ".")
			if len(got.Images) != 1 || got.Images[0].Field != want {
				t.Errorf("workload.Read found %+v, want one image at %s", got.Images, want)
			}
		})
	}
}
