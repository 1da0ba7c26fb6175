// Package knative checks the Knative Services under config/ the way a
// cluster running Knative Serving would: strict decoding, then Serving's
// defaults and validation.
package knative

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"knative.dev/pkg/apis"
	"knative.dev/pkg/observability/runtime"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"knative.dev/serving/pkg/networking"
	"sigs.k8s.io/yaml"
)

// configDir is config/ at the root of the repository.
const configDir = "../../config"

// document is one object of config/ with the type it declares.
type document struct {
	where string // file and position, for messages
	gvk   string // "apiVersion/kind", e.g. "serving.knative.dev/v1/Service"
	kind  string
	data  []byte
}

// documents splits every YAML file of config/ (not its subfolders, as
// `ko apply -f config/` does not descend into them) into documents.
func documents(t *testing.T) []document {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(configDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no YAML under %s: %v", configDir, err)
	}
	var docs []document
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 1; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var meta struct{ APIVersion, Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			if meta.Kind == "" {
				continue // only comments
			}
			docs = append(docs, document{
				where: fmt.Sprintf("%s (document %d)", filepath.Base(f), i),
				gvk:   meta.APIVersion + "/" + meta.Kind, kind: meta.Kind, data: doc,
			})
		}
	}
	return docs
}

func TestServicesPassKnativeValidation(t *testing.T) {
	// image-policy never scales to zero (a fail-closed ImagePolicyWebhook
	// would then have to admit its own wake-up pod), and keeps the
	// activator off its path; validating does scale to zero.
	want := map[string]serviceWant{
		"image-policy": {args: []string{"serve", "--handlers=imagepolicy"}, annotations: map[string]string{
			"autoscaling.knative.dev/min-scale":             "2",
			"autoscaling.knative.dev/target-burst-capacity": "0",
			"autoscaling.knative.dev/target":                "",
		}},
		"validating": {args: []string{"serve", "--handlers=validating,mutating"}, annotations: map[string]string{
			"autoscaling.knative.dev/min-scale":                          "0",
			"autoscaling.knative.dev/scale-to-zero-pod-retention-period": "",
			"autoscaling.knative.dev/target":                             "",
		}, serviceAccount: "admitfn-validating"}, // reads pods' pull Secrets
	}
	got := map[string]bool{}
	for _, doc := range documents(t) {
		if doc.gvk != servingv1.SchemeGroupVersion.String()+"/Service" {
			continue
		}
		where := doc.where
		var svc servingv1.Service
		if err := yaml.UnmarshalStrict(doc.data, &svc); err != nil {
			t.Fatalf("%s does not decode strictly as a Knative Service: %v", where, err)
		}
		t.Run(svc.Name, func(t *testing.T) {
			got[svc.Name] = true
			ctx := apis.WithinCreate(context.Background())
			svc.SetDefaults(ctx)
			if err := svc.Validate(ctx); err != nil {
				t.Fatalf("Knative rejects %s: %v", where, err)
			}
			checkAdmissionService(t, &svc, want[svc.Name])
		})
	}
	for name := range want {
		if !got[name] {
			t.Errorf("config/ has no Knative Service %q", name)
		}
	}
}

// serviceWant is what a Service of config/ must hold: its arguments'
// start, and annotations (an empty value: set to anything).
type serviceWant struct {
	args        []string
	annotations map[string]string
	// serviceAccount is the account the Service runs as: "" for none (no
	// token mounted: it never calls the API).
	serviceAccount string
}

// checkAdmissionService checks the choices config/ makes for an admission
// handler, beyond what Knative requires.
func checkAdmissionService(t *testing.T, svc *servingv1.Service, want serviceWant) {
	t.Helper()
	args := want.args
	tmpl := svc.Spec.Template
	if svc.Namespace != "admitfn" {
		t.Errorf("namespace %q, want admitfn (left out of the webhooks' namespaceSelector)", svc.Namespace)
	}
	for key, want := range want.annotations {
		v, ok := tmpl.Annotations[key]
		if !ok || (want != "" && v != want) {
			t.Errorf("annotation %s = %q (set: %v), want %q", key, v, ok, want)
		}
	}
	if tmpl.Spec.ContainerConcurrency == nil || *tmpl.Spec.ContainerConcurrency == 0 {
		t.Error("containerConcurrency is unset or unlimited")
	}
	if ts := tmpl.Spec.TimeoutSeconds; ts == nil || *ts > 30 {
		t.Errorf("timeoutSeconds %v: the apiserver waits at most 30 s for a webhook", ts)
	}
	if want.serviceAccount == "" {
		if a := tmpl.Spec.AutomountServiceAccountToken; a == nil || *a {
			t.Error("a service account token is mounted; this Service never calls the API")
		}
	} else if got := tmpl.Spec.ServiceAccountName; got != want.serviceAccount {
		t.Errorf("serviceAccountName %q, want %q", got, want.serviceAccount)
	}
	if len(tmpl.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(tmpl.Spec.Containers))
	}
	c := tmpl.Spec.Containers[0]
	if !strings.HasPrefix(c.Image, "ko://github.com/admitfn/admitfn/") {
		t.Errorf("image %q is not a ko:// import path of this module", c.Image)
	}
	if len(c.Args) < len(args) || strings.Join(c.Args[:len(args)], " ") != strings.Join(args, " ") {
		t.Errorf("args %q, want them to start with %q", c.Args, args)
	}
	// Callers must hold a token from a mounted Secret: the Service's URL
	// is public and TLS ends at the ingress.
	tokenDir := ""
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--token-dir="); ok {
			tokenDir = v
		}
	}
	secretMounted := false
	for _, m := range c.VolumeMounts {
		if m.MountPath != tokenDir {
			continue
		}
		for _, v := range tmpl.Spec.Volumes {
			secretMounted = secretMounted || (v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == "admitfn-callers")
		}
	}
	if tokenDir == "" || !secretMounted {
		t.Errorf("--token-dir %q is not the mount of Secret admitfn-callers: anyone reaching the URL could ask", tokenDir)
	}
	// /metrics on a port of its own, which the ingress does not route.
	// The queue-proxy shares the pod's network and binds its ports
	// whatever the Service says (Serving's validation only checks
	// declared containerPorts): admitfn on 9090 kept every pod from
	// starting on real Knative (test/e2e TestKnativeScaleFromZero).
	metricsPort := ""
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--metrics-listen="); ok {
			_, metricsPort, _ = net.SplitHostPort(v)
		}
	}
	port, err := strconv.Atoi(metricsPort)
	if err != nil {
		t.Errorf("args %q: /metrics must be served on a port of its own (--metrics-listen=:PORT)", c.Args)
	}
	queueProxy := []int{networking.BackendHTTPPort, networking.BackendHTTP2Port, networking.QueueAdminPort,
		networking.AutoscalingQueueMetricsPort, networking.UserQueueMetricsPort, runtime.ProfilingDefaultPort}
	if slices.Contains(queueProxy, port) {
		t.Errorf("--metrics-listen port %d is one the queue-proxy binds in the same pod (%v)", port, queueProxy)
	}
	for _, p := range c.Ports {
		if int(p.ContainerPort) == port {
			t.Errorf("--metrics-listen port %d is the port the ingress routes", port)
		}
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/health/readiness" {
		t.Errorf("readiness probe %+v, want GET /health/readiness", c.ReadinessProbe)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/health/liveness" {
		t.Errorf("liveness probe %+v, want GET /health/liveness", c.LivenessProbe)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Error("no memory limit")
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("no securityContext")
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		t.Error("runAsNonRoot is not true")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("readOnlyRootFilesystem is not true")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("allowPrivilegeEscalation is not false")
	}
}

// TestEveryDocumentDecodesStrictly decodes the other objects of config/ as
// their typed API objects, refusing unknown fields.
func TestEveryDocumentDecodesStrictly(t *testing.T) {
	for _, doc := range documents(t) {
		var into any
		switch doc.gvk {
		case "v1/Namespace":
			into = &corev1.Namespace{}
		case "v1/ConfigMap":
			into = &corev1.ConfigMap{}
		case "serving.knative.dev/v1/Service":
			into = &servingv1.Service{}
		case "policy/v1/PodDisruptionBudget":
			into = &policyv1.PodDisruptionBudget{}
		case "v1/ServiceAccount":
			into = &corev1.ServiceAccount{}
		case "rbac.authorization.k8s.io/v1/ClusterRole":
			into = &rbacv1.ClusterRole{}
		case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
			into = &rbacv1.ClusterRoleBinding{}
		default:
			t.Errorf("%s: unexpected %s under config/", doc.where, doc.gvk)
			continue
		}
		if err := yaml.UnmarshalStrict(doc.data, into); err != nil {
			t.Errorf("%s (%s): %v", doc.where, doc.kind, err)
		}
	}
}

// TestPullSecretReaderMayOnlyGet: the one role config/ grants lets the
// validating Service's account get Secrets and ServiceAccounts, and
// nothing else — no list or watch that would read Secrets no pod names.
func TestPullSecretReaderMayOnlyGet(t *testing.T) {
	var roles []rbacv1.ClusterRole
	var bindings []rbacv1.ClusterRoleBinding
	for _, doc := range documents(t) {
		switch doc.gvk {
		case "rbac.authorization.k8s.io/v1/ClusterRole":
			var r rbacv1.ClusterRole
			if err := yaml.UnmarshalStrict(doc.data, &r); err != nil {
				t.Fatal(err)
			}
			roles = append(roles, r)
		case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
			var b rbacv1.ClusterRoleBinding
			if err := yaml.UnmarshalStrict(doc.data, &b); err != nil {
				t.Fatal(err)
			}
			bindings = append(bindings, b)
		}
	}
	if len(roles) != 1 || len(bindings) != 1 {
		t.Fatalf("%d ClusterRoles and %d bindings in config/, want one of each", len(roles), len(bindings))
	}
	wantRules := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets", "serviceaccounts"}, Verbs: []string{"get"}}}
	if diff := cmp.Diff(wantRules, roles[0].Rules); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	b := bindings[0]
	wantSubjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "admitfn-validating", Namespace: "admitfn"}}
	if diff := cmp.Diff(wantSubjects, b.Subjects); diff != "" {
		t.Errorf("subjects (-want +got):\n%s", diff)
	}
	if b.RoleRef.Name != roles[0].Name || b.RoleRef.Kind != "ClusterRole" {
		t.Errorf("the binding refers to %s %q, want the ClusterRole %q", b.RoleRef.Kind, b.RoleRef.Name, roles[0].Name)
	}
}
