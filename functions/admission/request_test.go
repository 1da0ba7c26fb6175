package admission

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/admitfn/admitfn/functions/policy"
)

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

func deployment(images ...string) *appsv1.Deployment {
	d := &appsv1.Deployment{}
	for i, img := range images {
		d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, corev1.Container{Name: string(rune('a' + i)), Image: img})
	}
	return d
}

func runAs(d *appsv1.Deployment, uid int64) *appsv1.Deployment {
	d.Spec.Template.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: &uid}
	return d
}

func podRunAs(d *appsv1.Deployment, uid int64) *appsv1.Deployment {
	d.Spec.Template.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: &uid}
	return d
}

func annotated(d *appsv1.Deployment, a map[string]string) *appsv1.Deployment {
	d.Spec.Template.Annotations = a
	return d
}

func TestRead(t *testing.T) {
	podWith := func(eph ...string) *corev1.Pod {
		p := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx:1.17.1"}}}}
		for _, img := range eph {
			p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: img, Image: img}})
		}
		return p
	}
	tests := []struct {
		name   string
		kind   string
		op     admissionv1.Operation
		sub    string
		obj    any
		old    any
		fields []string
	}{
		{"deployment create", "Deployment", admissionv1.Create, "", deployment("nginx:1", "redis:7"), nil, []string{"spec.template.spec.containers[0].image=nginx:1", "spec.template.spec.containers[1].image=redis:7"}},
		{"update judges only changed images", "Deployment", admissionv1.Update, "", deployment("nginx:2", "redis:7"), deployment("nginx:1", "redis:7"), []string{"spec.template.spec.containers[0].image=nginx:2"}},
		{"update with nothing changed", "Deployment", admissionv1.Update, "", deployment("nginx:1"), deployment("nginx:1"), nil},
		{"update of runAsUser alone judges the image again", "Deployment", admissionv1.Update, "", runAs(deployment("nginx:1"), 0), runAs(deployment("nginx:1"), 1000),
			[]string{"spec.template.spec.containers[0].image=nginx:1"}},
		{"update of the pod's runAsUser", "Deployment", admissionv1.Update, "", podRunAs(deployment("nginx:1"), 0), deployment("nginx:1"),
			[]string{"spec.template.spec.containers[0].image=nginx:1"}},
		{"update removing the break-glass annotation judges every image", "Deployment", admissionv1.Update, "", deployment("nginx:1"),
			annotated(deployment("nginx:1"), map[string]string{"admitfn.dev/break-glass": "incident 42"}), []string{"spec.template.spec.containers[0].image=nginx:1"}},
		{"update with the same runAsUser", "Deployment", admissionv1.Update, "", runAs(deployment("nginx:1"), 1000), runAs(deployment("nginx:1"), 1000), nil},
		{"ephemeral subresource judges ephemeral containers only", "Pod", admissionv1.Update, "ephemeralcontainers", podWith("busybox"), podWith(), []string{"spec.ephemeralContainers[0].image=busybox"}},
		{"second ephemeral container", "Pod", admissionv1.Update, "ephemeralcontainers", podWith("busybox:1", "alpine"), podWith("busybox:1"), []string{"spec.ephemeralContainers[1].image=alpine"}},
		{"delete judges nothing", "Pod", admissionv1.Delete, "", nil, podWith(), nil},
		{"configmap has no images", "ConfigMap", admissionv1.Create, "", &corev1.ConfigMap{}, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := &admissionv1.AdmissionRequest{
				UID: "u", Kind: metav1.GroupVersionKind{Kind: tc.kind}, Operation: tc.op, SubResource: tc.sub,
				Namespace: "ns", Name: "x", Object: raw(t, tc.obj), OldObject: raw(t, tc.old),
				UserInfo: authv1.UserInfo{Username: "alice", Groups: []string{"dev"}},
			}
			f, err := Read(req, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, img := range f.Request.Images {
				got = append(got, img.Field+"="+img.Ref)
			}
			if diff := cmp.Diff(tc.fields, got); diff != "" {
				t.Errorf("images (-want +got):\n%s", diff)
			}
			if len(f.Images) != len(f.Request.Images) {
				t.Errorf("%d patchable images for %d judged", len(f.Images), len(f.Request.Images))
			}
			if diff := cmp.Diff(&policy.User{Name: "alice", Groups: []string{"dev"}}, f.Request.User); diff != "" {
				t.Errorf("user (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadNodeAndService(t *testing.T) {
	node := func(labels map[string]string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node01", Labels: labels}}
	}
	f, err := Read(&admissionv1.AdmissionRequest{Kind: metav1.GroupVersionKind{Kind: "Node"}, Operation: admissionv1.Update, Name: "node01",
		Object: raw(t, node(map[string]string{"a": "2"})), OldObject: raw(t, node(map[string]string{"a": "1"}))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&policy.NodeChange{OldLabels: map[string]string{"a": "1"}, NewLabels: map[string]string{"a": "2"}}, f.Request.Node); diff != "" {
		t.Errorf("node (-want +got):\n%s", diff)
	}
	for svcType, want := range map[corev1.ServiceType]string{"": "ClusterIP", corev1.ServiceTypeLoadBalancer: "LoadBalancer"} {
		f, err := Read(&admissionv1.AdmissionRequest{Kind: metav1.GroupVersionKind{Kind: "Service"}, Operation: admissionv1.Create,
			Object: raw(t, &corev1.Service{Spec: corev1.ServiceSpec{Type: svcType}})}, nil)
		if err != nil || f.Request.ServiceType != want {
			t.Errorf("Service type %q read as %q, %v; want %q", svcType, f.Request.ServiceType, err, want)
		}
	}
	for _, bad := range []*admissionv1.AdmissionRequest{
		{Kind: metav1.GroupVersionKind{Kind: "Deployment"}, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: []byte(`{"spec":{}}`)}},
		{Kind: metav1.GroupVersionKind{Kind: "Node"}, Operation: admissionv1.Create},
		{Kind: metav1.GroupVersionKind{Kind: "Service"}, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: []byte(`{"spec":"x"}`)}},
	} {
		if _, err := Read(bad, nil); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("Read(%s %s) = %v, want a one-line error", bad.Kind.Kind, bad.Object.Raw, err)
		}
	}
}
