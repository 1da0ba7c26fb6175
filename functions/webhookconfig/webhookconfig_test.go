package webhookconfig

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"

	"github.com/admitfn/admitfn/config"
)

// TestRender renders the shipped registrations and reads them back as the
// API types kubectl would send.
func TestRender(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	out, err := Render(config.Webhooks, Options{BaseURL: "https://validating.prod.example.com/", CABundle: ca, Mutating: true})
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(out, []byte("\n---\n"))
	if len(docs) != 2 {
		t.Fatalf("%d documents, want the validating and the mutating registration:\n%s", len(docs), out)
	}
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	var m admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(docs[0], &v); err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(docs[1], &m); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range v.Webhooks {
		got = append(got, *w.ClientConfig.URL)
		if !bytes.Equal(w.ClientConfig.CABundle, ca) {
			t.Errorf("%s caBundle %q", w.Name, w.ClientConfig.CABundle)
		}
	}
	for _, w := range m.Webhooks {
		got = append(got, *w.ClientConfig.URL)
	}
	want := []string{"https://validating.prod.example.com/validate", "https://validating.prod.example.com/validate", "https://validating.prod.example.com/mutate"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("URLs (-want +got):\n%s", diff)
	}
	if v.Webhooks[0].NamespaceSelector == nil || len(v.Webhooks[0].MatchConditions) == 0 {
		t.Error("the shipped namespaceSelector and matchConditions were lost")
	}

	only, err := Render(config.Webhooks, Options{BaseURL: "https://v.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(only), "MutatingWebhookConfiguration") || strings.Contains(string(only), "caBundle") {
		t.Errorf("without --mutating and --ca-file:\n%s", only)
	}
	for _, bad := range []string{"", "http://v.example.com", "https://v.example.com/validate", "https://"} {
		if _, err := Render(config.Webhooks, Options{BaseURL: bad}); err == nil {
			t.Errorf("Render(%q) succeeded, want an error", bad)
		}
	}
}

// TestRenderWithMatchConditions: conditions are added to the workload
// webhook's own, which stay; the node webhook is untouched.
func TestRenderWithMatchConditions(t *testing.T) {
	extra := admissionregistrationv1.MatchCondition{Name: "admitfn-registry-rules", Expression: "true"}
	out, err := Render(config.Webhooks, Options{BaseURL: "https://v.example.com", MatchConditions: []admissionregistrationv1.MatchCondition{extra}})
	if err != nil {
		t.Fatal(err)
	}
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(out, &v); err != nil {
		t.Fatal(err)
	}
	_, shipped, err := WorkloadScope(config.Webhooks)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(append(shipped, extra), v.Webhooks[0].MatchConditions); diff != "" {
		t.Errorf("workload webhook's conditions (-want +got):\n%s", diff)
	}
	if len(shipped) == 0 {
		t.Error("the shipped registration has no match condition to keep")
	}
	if len(v.Webhooks[1].MatchConditions) != 0 {
		t.Errorf("the node webhook gained conditions: %v", v.Webhooks[1].MatchConditions)
	}
}

// TestRenderWithoutNodeWebhook: the node webhook goes, the workload one
// stays.
func TestRenderWithoutNodeWebhook(t *testing.T) {
	out, err := Render(config.Webhooks, Options{BaseURL: "https://v.example.com", NoNodeWebhook: true})
	if err != nil {
		t.Fatal(err)
	}
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(out, &v); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, w := range v.Webhooks {
		names = append(names, w.Name)
	}
	if diff := cmp.Diff([]string{"workloads.validating.admitfn.dev"}, names); diff != "" {
		t.Errorf("webhooks (-want +got):\n%s", diff)
	}
}

// TestWriteStatic: one file per plugin folder, named for staticManifestsDir,
// and the mutating folder made even when it stays empty.
func TestWriteStatic(t *testing.T) {
	dir := t.TempDir()
	written, err := WriteStatic(config.Webhooks, Options{BaseURL: "https://127.0.0.1:8443"}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{filepath.Join(dir, "validating", "admitfn-validating.yaml")}, written); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	b, err := os.ReadFile(written[0])
	if err != nil {
		t.Fatal(err)
	}
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(b, &v); err != nil {
		t.Fatal(err)
	}
	if v.Name != "admitfn-validating.static.k8s.io" || *v.Webhooks[0].ClientConfig.URL != "https://127.0.0.1:8443/validate" {
		t.Errorf("name %q, url %q", v.Name, *v.Webhooks[0].ClientConfig.URL)
	}
	if fi, err := os.Stat(filepath.Join(dir, "mutating")); err != nil || !fi.IsDir() {
		t.Errorf("mutating folder: %v", err)
	}
}
