// Package config checks the manifests under config/.
package config

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/zap"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/admitfn/admitfn/functions/keyless/keylesstest"
	"github.com/admitfn/admitfn/functions/notation/notationtest"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/server"
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
		"/etc/admitfn/notation/vendor-ca.pem":     notationtest.NewSigner(t, "Vendor", "release", time.Now()).TrustStore,
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
		// Attestations share the signatures' authority type, but a
		// Notation authority signs images only: the policy refuses one
		// there, so _example cannot show it.
		if strings.HasPrefix(field, "spec.rules.attestations.authorities.notation") {
			continue
		}
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

// funcYAML is the part of Knative Functions' func.yaml (schema 0.36)
// admitfn writes, field for field as the schema names them; decoded
// strictly, so a misspelt or unknown field fails. (The schema itself lives
// in knative.dev/func, which the module proxy does not serve, so the test
// carries what it checks rather than reading a file beside the clone.)
type funcYAML struct {
	SpecVersion string    `json:"specVersion"`
	Name        string    `json:"name"`
	Runtime     string    `json:"runtime"`
	Namespace   string    `json:"namespace"`
	Created     time.Time `json:"created"`
	Invoke      string    `json:"invoke"`
	Run         struct {
		Envs []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"envs"`
		Volumes []struct {
			Secret    string `json:"secret,omitempty"`
			ConfigMap string `json:"configMap,omitempty"`
			Path      string `json:"path"`
		} `json:"volumes"`
	} `json:"run"`
	Deploy struct {
		Namespace       string `json:"namespace"`
		HealthEndpoints struct {
			Liveness  string `json:"liveness"`
			Readiness string `json:"readiness"`
		} `json:"healthEndpoints"`
		Options struct {
			Scale struct {
				Min    *int64   `json:"min"`
				Max    *int64   `json:"max"`
				Metric string   `json:"metric"`
				Target *float64 `json:"target"`
			} `json:"scale"`
		} `json:"options"`
	} `json:"deploy"`
}

// TestFuncYAML checks func.yaml as Knative Functions reads it, and that a
// `func deploy` is as closed as `ko apply -f config/`: the caller-token
// Secret the Services mount is mounted, and ADMITFN_TOKEN_DIR points at it.
func TestFuncYAML(t *testing.T) {
	data, err := os.ReadFile("../../func.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var fn funcYAML
	if err := yaml.UnmarshalStrict(data, &fn); err != nil {
		t.Fatalf("func.yaml: %v", err)
	}
	if fn.SpecVersion != "0.36.0" || fn.Runtime != "go" || fn.Invoke != "http" || fn.Name == "" {
		t.Errorf("specVersion %q runtime %q invoke %q name %q; want 0.36.0, go, http and a name", fn.SpecVersion, fn.Runtime, fn.Invoke, fn.Name)
	}
	if h := fn.Deploy.HealthEndpoints; h.Liveness != server.LivenessPath || h.Readiness != server.ReadinessPath {
		t.Errorf("health endpoints %+v, want the server's %s and %s", h, server.LivenessPath, server.ReadinessPath)
	}
	if m := fn.Deploy.Options.Scale.Metric; m != "concurrency" && m != "rps" {
		t.Errorf("scale metric %q is not concurrency or rps", m)
	}
	// The Secret the ko-deployed Services mount for caller tokens.
	svc := readService(t, "400-image-policy.yaml")
	var secret string
	for _, v := range svc.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			secret = v.Secret.SecretName
		}
	}
	mounted := map[string]string{} // path → Secret
	for _, v := range fn.Run.Volumes {
		if v.Secret != "" {
			mounted[v.Path] = v.Secret
		}
	}
	var tokenDir string
	for _, e := range fn.Run.Envs {
		if e.Name == "ADMITFN_TOKEN_DIR" {
			tokenDir = e.Value
		}
	}
	if secret == "" || tokenDir == "" || mounted[tokenDir] != secret {
		t.Errorf("func.yaml: ADMITFN_TOKEN_DIR %q, Secrets mounted %v; want ADMITFN_TOKEN_DIR set to where the %q Secret (config/400-image-policy.yaml) is mounted", tokenDir, mounted, secret)
	}
	broken := strings.Replace(string(data), "invoke: http", "invoke: http\ninvokeTimeout: 3s", 1)
	if err := yaml.UnmarshalStrict([]byte(broken), &funcYAML{}); err == nil {
		t.Error("a func.yaml with an unknown field decoded; the check is not strict")
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

// knativeService is the part of a Knative Service these tests read: its
// pod spec (test/knative checks the rest with Serving's own types).
type knativeService struct {
	Spec struct {
		Template struct {
			Spec corev1.PodSpec `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

// readService reads the Knative Service in config/<file>.
func readService(t *testing.T, file string) knativeService {
	t.Helper()
	data, err := os.ReadFile("../../config/" + file)
	if err != nil {
		t.Fatal(err)
	}
	var svc knativeService
	if err := yaml.Unmarshal(data, &svc); err != nil {
		t.Fatalf("config/%s: %v", file, err)
	}
	return svc
}
