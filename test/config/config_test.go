// Package config checks the manifests under config/.
package config

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.uber.org/zap"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/admitfn/admitfn/functions/keyless/keylesstest"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/test/manifests"
)

// TestPolicyConfigMap checks that the policy shipped in config/ parses and
// is the embedded default, so a fresh deployment behaves like `make run`.
func TestPolicyConfigMap(t *testing.T) {
	cm := readConfigMap(t, "300-policy.yaml")
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

	example, ok := cm.Data["_example"]
	if !ok {
		t.Fatalf("ConfigMap %s has no _example key", cm.Name)
	}
	// The files _example names, as a pod would have them mounted.
	files := map[string][]byte{
		"/etc/admitfn/keys/security-team.pub":     []byte("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE7xjqpUxjR1GEnxs9kM9te4PsmlKX\nxaswqJUTUNyl2/85qgZ8Y6a7G2MJMEj9pio22AkXNG/QL8uTIcFoZMv+Ug==\n-----END PUBLIC KEY-----\n"),
		"/etc/admitfn/sigstore/trusted_root.json": keylesstest.NewCA(t).TrustedRoot,
	}
	readFile := policy.WithReadFile(func(path string) ([]byte, error) {
		if b, ok := files[path]; ok {
			return b, nil
		}
		return nil, fmt.Errorf("_example names %s, which this test does not provide", path)
	})
	if _, err := policy.Parse([]byte(example), readFile); err != nil {
		t.Fatalf("_example in the ConfigMap is not a valid policy: %v", err)
	}
	var tree any
	if err := yaml.Unmarshal([]byte(example), &tree); err != nil {
		t.Fatal(err)
	}
	written := map[string]bool{}
	collectKeys("", tree, written)
	for _, field := range fieldPaths("", reflect.TypeFor[policy.Document]()) {
		if !written[field] {
			t.Errorf("_example does not show %s", field)
		}
	}
}

// fieldPaths lists the JSON field paths of a policy document type, e.g.
// "spec.rules.tags.denyLatest", so _example can be checked against the
// types rather than against a list kept by hand.
func fieldPaths(prefix string, t reflect.Type) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var paths []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		path := strings.TrimPrefix(prefix+"."+name, ".")
		paths = append(paths, path)
		paths = append(paths, fieldPaths(path, t.Field(i).Type)...)
	}
	return paths
}

// collectKeys records the key paths of a decoded YAML tree, list items
// folded into their parent's path.
func collectKeys(prefix string, node any, into map[string]bool) {
	switch n := node.(type) {
	case map[string]any:
		for k, v := range n {
			path := strings.TrimPrefix(prefix+"."+k, ".")
			into[path] = true
			collectKeys(path, v, into)
		}
	case []any:
		for _, v := range n {
			collectKeys(prefix, v, into)
		}
	}
}

// TestWebhookConfigurations checks what keeps a cluster safe and reachable.
func TestWebhookConfigurations(t *testing.T) {
	v, m, err := manifests.Webhooks("../../config/webhooks")
	if err != nil {
		t.Fatal(err)
	}
	if v.Kind != "ValidatingWebhookConfiguration" || m.Kind != "MutatingWebhookConfiguration" {
		t.Fatalf("kinds %q and %q", v.Kind, m.Kind)
	}
	type common struct {
		name       string
		url        *string
		versions   []string
		side       *admissionregistrationv1.SideEffectClass
		failure    *admissionregistrationv1.FailurePolicyType
		timeout    *int32
		nsSel      *metav1.LabelSelector
		rules      []admissionregistrationv1.RuleWithOperations
		namespace  bool
		conditions []admissionregistrationv1.MatchCondition
	}
	var all []common
	for _, w := range v.Webhooks {
		all = append(all, common{w.Name, w.ClientConfig.URL, w.AdmissionReviewVersions, w.SideEffects, w.FailurePolicy, w.TimeoutSeconds, w.NamespaceSelector, w.Rules, w.Rules[0].Scope != nil && *w.Rules[0].Scope == admissionregistrationv1.NamespacedScope, w.MatchConditions})
	}
	for _, w := range m.Webhooks {
		all = append(all, common{w.Name, w.ClientConfig.URL, w.AdmissionReviewVersions, w.SideEffects, w.FailurePolicy, w.TimeoutSeconds, w.NamespaceSelector, w.Rules, true, w.MatchConditions})
	}
	for _, w := range all {
		t.Run(w.name, func(t *testing.T) {
			// admitfn webhook-config keeps the path and replaces the rest
			// with the Service's URL; the example host says what goes there.
			const placeholder = "https://validating.admitfn.example.com/"
			if w.url == nil {
				t.Errorf("no clientConfig.url, want %s<path>", placeholder)
			} else if !strings.HasPrefix(*w.url, placeholder) {
				t.Errorf("clientConfig.url %q, want %s<path>", *w.url, placeholder)
			}
			if diff := cmp.Diff([]string{"v1"}, w.versions); diff != "" {
				t.Errorf("admissionReviewVersions (-want +got):\n%s", diff)
			}
			if w.side == nil || *w.side != admissionregistrationv1.SideEffectClassNone {
				t.Errorf("sideEffects %v, want None", w.side)
			}
			if w.failure == nil || *w.failure != admissionregistrationv1.Fail {
				t.Errorf("failurePolicy %v, want Fail", w.failure)
			}
			if w.timeout == nil || *w.timeout < 10 || *w.timeout > 30 {
				t.Errorf("timeoutSeconds %v, want 10 to 30 (cold starts; the apiserver's ceiling is 30)", w.timeout)
			}
			if w.namespace {
				excluded := map[string]bool{}
				for _, e := range w.nsSel.MatchExpressions {
					if e.Key == "kubernetes.io/metadata.name" && e.Operator == metav1.LabelSelectorOpNotIn {
						for _, v := range e.Values {
							excluded[v] = true
						}
					}
				}
				// Every namespace whose pods are on the way to a
				// scale-to-zero webhook: a pod there that restarts
				// while admitfn is at zero must not wait on admitfn.
				for _, ns := range manifests.DataPathNamespaces() {
					if !excluded[ns] {
						t.Errorf("namespaceSelector leaves in %q: its pods are on the path to the webhook", ns)
					}
				}
				optOut := false
				for _, e := range w.nsSel.MatchExpressions {
					optOut = optOut || (e.Key == manifests.ExcludeLabel && e.Operator == metav1.LabelSelectorOpNotIn && cmp.Equal(e.Values, []string{"true"}))
				}
				if !optOut {
					t.Errorf("namespaceSelector %+v has no %s NotIn [true]: operators cannot leave out a namespace of their own", w.nsSel, manifests.ExcludeLabel)
				}
				// The apiserver keeps default/kubernetes itself; that
				// write must not wait for a webhook at zero.
				apiserverSkipped := false
				for _, c := range w.conditions {
					apiserverSkipped = apiserverSkipped || c.Expression == `request.userInfo.username != "system:apiserver"`
				}
				if !apiserverSkipped {
					t.Errorf("matchConditions %+v do not leave out kube-apiserver's own writes", w.conditions)
				}
			}
			for _, r := range w.rules {
				for _, res := range r.Resources {
					if res == "nodes/status" || res == "*" || res == "*/*" {
						t.Errorf("rule matches %q: kubelets' status updates and everything else must not wait for admitfn", res)
					}
				}
			}
		})
	}
}

// TestFuncYAMLSchema validates func.yaml against the Knative Functions
// schema in ../shared/knative with a JSON-schema library, and checks that
// the validator rejects a broken copy.
func TestFuncYAMLSchema(t *testing.T) {
	schemaFile, err := os.Open("../../../shared/knative/func_yaml-schema.json")
	if err != nil {
		t.Fatalf("the Knative Functions schema is expected beside the repository: %v", err)
	}
	defer schemaFile.Close()
	schemaDoc, err := jsonschema.UnmarshalJSON(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("func_yaml-schema.json", schemaDoc); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("func_yaml-schema.json")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("../../func.yaml")
	if err != nil {
		t.Fatal(err)
	}
	instance := func(yamlDoc []byte) any {
		t.Helper()
		js, err := yaml.YAMLToJSON(yamlDoc)
		if err != nil {
			t.Fatal(err)
		}
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(string(js)))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := schema.Validate(instance(data)); err != nil {
		t.Errorf("func.yaml does not validate: %v", err)
	}
	var fn map[string]any
	if err := yaml.Unmarshal(data, &fn); err != nil {
		t.Fatal(err)
	}
	if fn["specVersion"] != "0.36.0" || fn["runtime"] != "go" {
		t.Errorf("specVersion %v runtime %v, want 0.36.0 and go", fn["specVersion"], fn["runtime"])
	}
	broken := strings.Replace(string(data), "invoke: http", "invoke: grpc", 1)
	if err := schema.Validate(instance([]byte(broken))); err == nil {
		t.Error("the schema accepted invoke: grpc; the validator is not checking")
	}
}

// TestLoggingConfigMap checks that the shipped zap-logger-config is a zap
// configuration with no misspelt key (knative.dev/pkg would fall back to
// its default logger without a word) and samples as its comment says.
func TestLoggingConfigMap(t *testing.T) {
	cm := readConfigMap(t, "310-logging.yaml")
	dec := json.NewDecoder(strings.NewReader(cm.Data["zap-logger-config"]))
	dec.DisallowUnknownFields()
	var zc zap.Config
	if err := dec.Decode(&zc); err != nil {
		t.Fatalf("zap-logger-config: %v", err)
	}
	if diff := cmp.Diff(&zap.SamplingConfig{Initial: 100, Thereafter: 100}, zc.Sampling,
		cmpopts.IgnoreFields(zap.SamplingConfig{}, "Hook")); diff != "" {
		t.Errorf("zap-logger-config sampling (-want +got):\n%s", diff)
	}
	if got := cm.Data["loglevel.admitfn"]; got != "info" {
		t.Errorf("loglevel.admitfn = %q, want info (one line per decision)", got)
	}
}

// readConfigMap reads config/<file>, which must hold one ConfigMap and no
// field a ConfigMap does not have.
func readConfigMap(t *testing.T, file string) corev1.ConfigMap {
	t.Helper()
	data, err := os.ReadFile("../../config/" + file)
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(data, &cm); err != nil {
		t.Fatalf("config/%s: %v", file, err)
	}
	return cm
}
