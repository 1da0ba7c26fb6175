// Package config checks the manifests under config/.
package config

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/admitfn/admitfn/functions/policy"
)

// TestPolicyConfigMap checks that the policy shipped in config/ parses and
// is the embedded default, so a fresh deployment behaves like `make run`.
func TestPolicyConfigMap(t *testing.T) {
	data, err := os.ReadFile("../../config/300-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(data, &cm); err != nil {
		t.Fatalf("config/300-policy.yaml: %v", err)
	}
	doc, ok := cm.Data["policy.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no policy.yaml key", cm.Name)
	}
	if _, err := policy.Parse([]byte(doc)); err != nil {
		t.Fatalf("policy.yaml in the ConfigMap: %v", err)
	}
	if diff := cmp.Diff(string(policy.DefaultYAML()), doc); diff != "" {
		t.Errorf("ConfigMap policy differs from the embedded default (-want +got):\n%s", diff)
	}
}
