// Package manifests reads the Kubernetes manifests under config/ for the
// tests that check them and the e2e suite that applies them.
package manifests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
)

// Webhook files under config/webhooks/.
const (
	ValidatingFile = "500-validating.yaml"
	MutatingFile   = "510-mutating.yaml"
)

// DataPathNamespaces are the namespaces whose pods must run for a
// webhook served by a Knative Service to answer (Knative Serving, the
// ingresses it works with, cert-manager for its certificates, the common
// CNIs), besides kube-system and admitfn's own. The webhook
// registrations must leave them out: the config tests check that, and
// the e2e suite creates a pod in each while the webhook is at zero.
func DataPathNamespaces() []string {
	return []string{
		"kube-system", "admitfn",
		"knative-serving",
		"kourier-system", "istio-system", "contour-external", "contour-internal", "traefik",
		"cert-manager",
		"kube-flannel", "calico-system", "tigera-operator",
	}
}

// ExcludeLabel is the namespace label (value "true") that leaves a
// namespace out of admitfn's webhooks.
const ExcludeLabel = "admission.admitfn.dev/exclude"

// Webhooks decodes the validating and mutating configurations in dir
// (config/webhooks) strictly.
func Webhooks(dir string) (*admissionregistrationv1.ValidatingWebhookConfiguration, *admissionregistrationv1.MutatingWebhookConfiguration, error) {
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	var m admissionregistrationv1.MutatingWebhookConfiguration
	if err := decode(filepath.Join(dir, ValidatingFile), &v); err != nil {
		return nil, nil, err
	}
	if err := decode(filepath.Join(dir, MutatingFile), &m); err != nil {
		return nil, nil, err
	}
	return &v, &m, nil
}

// decode reads a one-document file strictly.
func decode(path string, into any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if n := strings.Count("\n"+string(data), "\n---\n"); n != 0 {
		return fmt.Errorf("%s holds %d documents, want 1", path, n+1)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
