package validating

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/admitfn/admitfn/functions/admission"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/review"
)

func reviewer(t *testing.T, extraRules string) *review.Reviewer {
	t.Helper()
	p, err := policy.Parse([]byte(`apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: test}
spec:
  rules:
  - name: no-latest
    tags: {denyLatest: true, denyUntagged: true}
  - name: node-restriction
    nodeRestriction: true
  - name: no-load-balancers
    namespaces: [team-*]
    serviceTypes: {deny: [LoadBalancer]}
  - name: no-dev-tags
    mode: warn
    tags: {deny: ["*-dev"]}
` + extraRules))
	if err != nil {
		t.Fatal(err)
	}
	return review.New(p, nil)
}

func raw(t *testing.T, obj any) runtime.RawExtension {
	t.Helper()
	if obj == nil {
		return runtime.RawExtension{}
	}
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return runtime.RawExtension{Raw: b}
}

func tmpl(img string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "init", Image: "busybox:1.36"}},
		Containers:     []corev1.Container{{Name: "app", Image: img}},
	}}
}

type result struct {
	Allowed  bool
	Code     int32
	Warnings int
}

func TestObjectKinds(t *testing.T) {
	rv := reviewer(t, "")
	objects := map[string]func(img string) any{
		"Pod":         func(img string) any { return corev1.Pod{Spec: tmpl(img).Spec} },
		"Deployment":  func(img string) any { return appsv1.Deployment{Spec: appsv1.DeploymentSpec{Template: tmpl(img)}} },
		"ReplicaSet":  func(img string) any { return appsv1.ReplicaSet{Spec: appsv1.ReplicaSetSpec{Template: tmpl(img)}} },
		"StatefulSet": func(img string) any { return appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{Template: tmpl(img)}} },
		"DaemonSet":   func(img string) any { return appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{Template: tmpl(img)}} },
		"Job":         func(img string) any { return batchv1.Job{Spec: batchv1.JobSpec{Template: tmpl(img)}} },
		"CronJob": func(img string) any {
			return batchv1.CronJob{Spec: batchv1.CronJobSpec{JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: tmpl(img)}}}}
		},
		"ReplicationController": func(img string) any {
			t := tmpl(img)
			return corev1.ReplicationController{Spec: corev1.ReplicationControllerSpec{Template: &t}}
		},
		"PodTemplate": func(img string) any { return corev1.PodTemplate{Template: tmpl(img)} },
	}
	fields := map[string]string{
		"Pod": "spec.containers[0].image", "PodTemplate": "template.spec.containers[0].image",
		"CronJob": "spec.jobTemplate.spec.template.spec.containers[0].image",
	}
	for kind, make := range objects {
		field := fields[kind]
		if field == "" {
			field = "spec.template.spec.containers[0].image"
		}
		for _, tc := range []struct {
			img  string
			want result
			has  string
		}{
			{"nginx:latest", result{Code: 403}, `image "nginx:latest" (` + field + `) violates rule "no-latest"`},
			{"nginx:1.17.1", result{Allowed: true}, ""},
			{"app:2.0-dev", result{Allowed: true, Warnings: 1}, `admitfn rule "no-dev-tags": app:2.0-dev: tag "2.0-dev" is denied`},
		} {
			t.Run(kind+"/"+tc.img, func(t *testing.T) {
				for _, dryRun := range []bool{false, true} {
					req := &admissionv1.AdmissionRequest{UID: "u", Kind: metav1.GroupVersionKind{Kind: kind}, Operation: admissionv1.Create,
						Namespace: "default", Name: "x", Object: raw(t, make(tc.img)), DryRun: &dryRun}
					resp := admit(rv, req)
					got := result{Allowed: resp.Allowed, Warnings: len(resp.Warnings)}
					msg := strings.Join(resp.Warnings, "\n")
					if resp.Result != nil {
						got.Code, msg = resp.Result.Code, resp.Result.Message
					}
					if diff := cmp.Diff(tc.want, got); diff != "" {
						t.Errorf("dryRun=%v (-want +got):\n%s\nmessage: %s", dryRun, diff, msg)
					}
					if !strings.Contains(msg, tc.has) {
						t.Errorf("dryRun=%v: message %q lacks %q", dryRun, msg, tc.has)
					}
					if resp.AuditAnnotations["decision"] == "" {
						t.Errorf("no audit annotations: %v", resp.AuditAnnotations)
					}
				}
			})
		}
	}
}

func TestRequestRules(t *testing.T) {
	rv := reviewer(t, "")
	kubelet := authv1.UserInfo{Username: "system:node:node01", Groups: []string{"system:nodes", "system:authenticated"}}
	node := func(name string, labels map[string]string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	svc := func(ty corev1.ServiceType) *corev1.Service {
		return &corev1.Service{Spec: corev1.ServiceSpec{Type: ty}}
	}
	tests := []struct {
		name      string
		kind      string
		ns, obj   string
		user      authv1.UserInfo
		object    any
		old       any
		allowed   bool
		messageOf string
	}{
		{"kubelet labels another node", "Node", "", "controlplane", kubelet, node("controlplane", map[string]string{"killercoda/one": "123"}), node("controlplane", nil), false, `node "node01" may not modify node "controlplane"`},
		{"kubelet sets restricted label on itself", "Node", "", "node01", kubelet, node("node01", map[string]string{"node-restriction.kubernetes.io/one": "123"}), node("node01", nil), false, `"node-restriction.kubernetes.io/one"`},
		{"kubelet sets ordinary label on itself", "Node", "", "node01", kubelet, node("node01", map[string]string{"killercoda/one": "123"}), node("node01", nil), true, ""},
		{"admin labels a node", "Node", "", "node01", authv1.UserInfo{Username: "admin", Groups: []string{"system:masters"}}, node("node01", map[string]string{"node-restriction.kubernetes.io/one": "1"}), node("node01", nil), true, ""},
		{"LoadBalancer in scope", "Service", "team-a", "web", authv1.UserInfo{Username: "dev"}, svc(corev1.ServiceTypeLoadBalancer), nil, false, `Service "web" has type LoadBalancer`},
		{"LoadBalancer out of scope", "Service", "default", "web", authv1.UserInfo{Username: "dev"}, svc(corev1.ServiceTypeLoadBalancer), nil, true, ""},
		{"ClusterIP in scope", "Service", "team-a", "web", authv1.UserInfo{Username: "dev"}, svc(""), nil, true, ""},
		{"malformed Node", "Node", "", "n", kubelet, "not an object", nil, false, "the Node object is malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			op := admissionv1.Create
			if tc.old != nil {
				op = admissionv1.Update
			}
			resp := admit(rv, &admissionv1.AdmissionRequest{UID: "u", Kind: metav1.GroupVersionKind{Kind: tc.kind},
				Operation: op, Namespace: tc.ns, Name: tc.obj, UserInfo: tc.user, Object: raw(t, tc.object), OldObject: raw(t, tc.old)})
			if resp.Allowed != tc.allowed {
				t.Fatalf("allowed = %v, want %v (%+v)", resp.Allowed, tc.allowed, resp.Result)
			}
			if !tc.allowed && !strings.Contains(resp.Result.Message, tc.messageOf) {
				t.Errorf("message %q lacks %q", resp.Result.Message, tc.messageOf)
			}
		})
	}
}

// TestShortenCutsAtACharacter: a long warning is cut to its bound without
// splitting a character, and a short one is left alone.
func TestShortenCutsAtACharacter(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", maxWarning-4) + "é" + strings.Repeat("ü", 50) // é straddles the cut
	tests := []struct{ name, in string }{
		{"short", "image \"nginx\" is é"},
		{"ascii", strings.Repeat("a", 1000)},
		{"a two-byte character at the cut", long},
		{"four-byte characters", strings.Repeat("𝄞", 100)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := shorten(tt.in, maxWarning)
			switch {
			case !utf8.ValidString(got):
				t.Errorf("shorten gave invalid UTF-8: %q", got)
			case len(got) > maxWarning:
				t.Errorf("shorten gave %d bytes, more than %d", len(got), maxWarning)
			case len(tt.in) <= maxWarning && got != tt.in:
				t.Errorf("a short warning was changed: %q", got)
			case len(tt.in) > maxWarning && (!strings.HasSuffix(got, "...") || !strings.HasPrefix(tt.in, strings.TrimSuffix(got, "..."))):
				t.Errorf("shorten = %q; want a prefix of the warning and ...", got)
			}
		})
	}
}

// admit decides req with rv's policy, as the handler does once it has
// decoded the review.
func admit(rv *review.Reviewer, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp, _ := Admitter{}.Admit(context.Background(), rv.Snapshot(), review.Budget{}, admission.Review{Version: admission.V1, Request: req})
	return resp
}
