// Package webhookconfig renders admitfn's webhook registrations
// (config/webhooks/) for one deployment: the webhooks' URL, and the CA
// that signed its certificate when the apiserver does not already trust
// it. It replaces editing the files by hand (or with sed).
package webhookconfig

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Files in the embedded folder.
const (
	validatingFile = "webhooks/500-validating.yaml"
	mutatingFile   = "webhooks/510-mutating.yaml"
)

// Options say what to render.
type Options struct {
	// BaseURL is the validating Service's URL (https, no path), as
	// `kn service describe validating -o url` prints it.
	BaseURL string
	// CABundle is the PEM of the CA that signed the URL's certificate;
	// empty when the apiserver trusts it already.
	CABundle []byte
	// Mutating adds the mutating registration (for a policy with
	// spec.mutation).
	Mutating bool
	// MatchConditions are added to the workload webhook's (vap's
	// WebhookConditions, once the generated policies are in place).
	MatchConditions []admissionregistrationv1.MatchCondition
	// NoNodeWebhook leaves the node webhook out (the generated policies
	// restrict kubelets).
	NoNodeWebhook bool
	// Static names the registrations for kube-apiserver's manifest-based
	// admission configuration (staticManifestsDir): loaded from files at
	// start, not visible or deletable through the API.
	Static bool
}

// StaticSuffix ends the name of every object loaded from
// staticManifestsDir (webhook registrations, admission policies); the
// apiserver refuses API objects named so.
const StaticSuffix = ".static.k8s.io"

// Static folders under WriteStatic's directory: each webhook plugin reads
// its own.
const (
	StaticValidatingDir = "validating"
	StaticMutatingDir   = "mutating"
)

// WriteStatic writes the registrations Render would, named for
// staticManifestsDir, into dir/validating and dir/mutating (created even
// when empty: the apiserver refuses a configured folder that is missing),
// and returns the files written.
func WriteStatic(files fs.FS, o Options, dir string) ([]string, error) {
	o.Static = true
	objs, err := objects(files, o)
	if err != nil {
		return nil, err
	}
	var written []string
	for _, sub := range []string{StaticValidatingDir, StaticMutatingDir} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	for _, obj := range objs {
		sub, name := StaticValidatingDir, "admitfn-validating.yaml"
		if _, ok := obj.(admissionregistrationv1.MutatingWebhookConfiguration); ok {
			sub, name = StaticMutatingDir, "admitfn-mutating.yaml"
		}
		b, err := yaml.Marshal(obj)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(dir, sub, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return nil, err
		}
		written = append(written, path)
	}
	return written, nil
}

// WorkloadScope is what limits the workload webhook beyond its rules: the
// namespaces it leaves out (the lockout-proof list) and its match
// conditions. The generated ValidatingAdmissionPolicies take the same,
// so that they judge what the webhook would have.
func WorkloadScope(files fs.FS) (*metav1.LabelSelector, []admissionregistrationv1.MatchCondition, error) {
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	if err := decode(files, validatingFile, &v); err != nil {
		return nil, nil, err
	}
	if len(v.Webhooks) == 0 {
		return nil, nil, fmt.Errorf("%s has no webhooks", validatingFile)
	}
	return v.Webhooks[0].NamespaceSelector, v.Webhooks[0].MatchConditions, nil
}

// Render reads the registrations from files (config.Webhooks) and returns
// them as one multi-document YAML stream for `kubectl apply -f -`.
func Render(files fs.FS, o Options) ([]byte, error) {
	docs, err := objects(files, o)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for i, d := range docs {
		b, err := yaml.Marshal(d)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(b)
	}
	return out.Bytes(), nil
}

// objects are the registrations Render writes.
func objects(files fs.FS, o Options) ([]any, error) {
	base, err := url.Parse(strings.TrimSuffix(o.BaseURL, "/"))
	switch {
	case err != nil:
		return nil, fmt.Errorf("--url %q is not a URL: %v", o.BaseURL, err)
	case base.Scheme != "https" || base.Host == "":
		return nil, fmt.Errorf("--url %q must be an https URL with a host: kube-apiserver calls webhooks over TLS only", o.BaseURL)
	case base.Path != "" || base.RawQuery != "":
		return nil, fmt.Errorf("--url %q must be the Service's base URL, without a path", o.BaseURL)
	}
	point := func(cc *admissionregistrationv1.WebhookClientConfig) error {
		if cc.URL == nil {
			return fmt.Errorf("a registration has no clientConfig.url to replace")
		}
		old, err := url.Parse(*cc.URL)
		if err != nil {
			return err
		}
		u := base.String() + old.Path
		cc.URL = &u
		cc.CABundle = o.CABundle
		return nil
	}
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	if err := decode(files, validatingFile, &v); err != nil {
		return nil, err
	}
	for i := range v.Webhooks {
		if err := point(&v.Webhooks[i].ClientConfig); err != nil {
			return nil, err
		}
	}
	if len(v.Webhooks) > 0 {
		v.Webhooks[0].MatchConditions = append(v.Webhooks[0].MatchConditions, o.MatchConditions...)
	}
	if o.NoNodeWebhook {
		v.Webhooks = slices.DeleteFunc(v.Webhooks, func(w admissionregistrationv1.ValidatingWebhook) bool {
			return slices.ContainsFunc(w.Rules, func(r admissionregistrationv1.RuleWithOperations) bool { return slices.Contains(r.Resources, "nodes") })
		})
	}
	if o.Static {
		v.Name += StaticSuffix
	}
	docs := []any{v}
	if o.Mutating {
		var m admissionregistrationv1.MutatingWebhookConfiguration
		if err := decode(files, mutatingFile, &m); err != nil {
			return nil, err
		}
		for i := range m.Webhooks {
			if err := point(&m.Webhooks[i].ClientConfig); err != nil {
				return nil, err
			}
		}
		if o.Static {
			m.Name += StaticSuffix
		}
		docs = append(docs, m)
	}
	return docs, nil
}

func decode(files fs.FS, name string, into any) error {
	b, err := fs.ReadFile(files, name)
	if err != nil {
		return err
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
