// Package manifests reads the Kubernetes manifests under config/ for the
// tests that check them and the e2e suite that applies them.
package manifests

import (
	"fmt"
	"os"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
)

// Webhooks decodes the webhook configurations file strictly.
func Webhooks(path string) (*admissionregistrationv1.ValidatingWebhookConfiguration, *admissionregistrationv1.MutatingWebhookConfiguration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	docs := strings.Split(string(data), "\n---\n")
	if len(docs) != 2 {
		return nil, nil, fmt.Errorf("%s holds %d documents, want 2", path, len(docs))
	}
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	var m admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &v); err != nil {
		return nil, nil, fmt.Errorf("%s: validating configuration: %w", path, err)
	}
	if err := yaml.UnmarshalStrict([]byte(docs[1]), &m); err != nil {
		return nil, nil, fmt.Errorf("%s: mutating configuration: %w", path, err)
	}
	return &v, &m, nil
}
