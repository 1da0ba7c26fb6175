package workload

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func template() corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"a.image-policy.k8s.io/x": "y"}},
		Spec: corev1.PodSpec{
			Containers:     []corev1.Container{{Name: "app", Image: "nginx:1.17.1", ImagePullPolicy: corev1.PullIfNotPresent}},
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
		},
	}
}

type summary struct {
	Field, Pointer, Ref, Policy string
	HasPolicy                   bool
}

func summarize(o Object) []summary {
	var out []summary
	for _, i := range o.Images {
		out = append(out, summary{i.Field, i.Pointer, i.Ref, i.PullPolicy, i.HasPullPolicy})
	}
	return out
}

func TestRead(t *testing.T) {
	tmpl := template()
	one := int32(1)
	tests := []struct {
		kind   string
		obj    any
		prefix string
	}{
		{"Pod", corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}, "spec"},
		{"PodTemplate", corev1.PodTemplate{Template: tmpl}, "template.spec"},
		{"Deployment", appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: &one, Template: tmpl}}, "spec.template.spec"},
		{"ReplicaSet", appsv1.ReplicaSet{Spec: appsv1.ReplicaSetSpec{Template: tmpl}}, "spec.template.spec"},
		{"StatefulSet", appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{Template: tmpl}}, "spec.template.spec"},
		{"DaemonSet", appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{Template: tmpl}}, "spec.template.spec"},
		{"Job", batchv1.Job{Spec: batchv1.JobSpec{Template: tmpl}}, "spec.template.spec"},
		{"ReplicationController", corev1.ReplicationController{Spec: corev1.ReplicationControllerSpec{Template: &tmpl}}, "spec.template.spec"},
		{"CronJob", batchv1.CronJob{Spec: batchv1.CronJobSpec{JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: tmpl}}}}, "spec.jobTemplate.spec.template.spec"},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			raw, err := json.Marshal(tc.obj)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Read(nil, tc.kind, raw)
			if err != nil {
				t.Fatal(err)
			}
			ptr := "/" + strings.ReplaceAll(tc.prefix, ".", "/")
			want := []summary{
				{tc.prefix + ".containers[0].image", ptr + "/containers/0/image", "nginx:1.17.1", "IfNotPresent", true},
				{tc.prefix + ".initContainers[0].image", ptr + "/initContainers/0/image", "busybox", "", false},
			}
			if diff := cmp.Diff(want, summarize(got)); diff != "" {
				t.Errorf("images (-want +got):\n%s", diff)
			}
			if got.Annotations["a.image-policy.k8s.io/x"] != "y" {
				t.Errorf("annotations = %v", got.Annotations)
			}
		})
	}
}

func TestReadEphemeralAndOddShapes(t *testing.T) {
	pod := `{"spec":{"containers":[{"name":"a","image":"nginx:1"}],"ephemeralContainers":[{"name":"dbg","image":"busybox"}]}}`
	got, err := Read(nil, "Pod", []byte(pod))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got.Images); n != 2 || got.Images[1].Field != "spec.ephemeralContainers[0].image" {
		t.Errorf("images = %+v", got.Images)
	}
	if got, err := Read(nil, "Service", []byte(`{"spec":{"type":"LoadBalancer"}}`)); err != nil || len(got.Images) != 0 {
		t.Errorf("Service: %+v, %v; want no images", got, err)
	}
	if got, err := Read(nil, "Pod", []byte(`{"spec":{"containers":[{"name":"a"}]}}`)); err != nil || got.Images[0].Ref != "" {
		t.Errorf("container without image: %+v, %v; want one image with an empty reference", got, err)
	}
	for _, bad := range []struct{ kind, raw, want string }{
		{"Deployment", `{"spec":{}}`, "Deployment has no spec.template"},
		{"Deployment", `{"spec":null}`, "Deployment has no spec"},
		{"Deployment", `{"spec":[]}`, "spec is not an object"},
		{"Pod", `{}`, "Pod has no spec"},
		{"Pod", `null`, "the Pod object is missing"},
		{"Pod", ``, "the Pod object is missing"},
		{"Pod", `{"spec":{"containers":"nginx"}}`, "malformed"},
		{"CronJob", `{"spec":{"jobTemplate":{"spec":{}}}}`, "CronJob has no spec.jobTemplate.spec.template"},
	} {
		if _, err := Read(nil, bad.kind, []byte(bad.raw)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Read(%s, %s) = %v, want an error containing %q", bad.kind, bad.raw, err, bad.want)
		}
	}
}

// TestImageVolumesAndRunAsUser reads a Deployment whose pod mounts an
// image volume and sets runAsUser at the pod level, overridden for one
// container: every image the kubelet pulls is found, with the uid each
// container will run as.
func TestImageVolumesAndRunAsUser(t *testing.T) {
	podUID, appUID := int64(1000), int64(0)
	tmpl := corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		SecurityContext: &corev1.PodSecurityContext{RunAsUser: &podUID},
		Containers: []corev1.Container{
			{Name: "app", Image: "registry.corp/app:1", SecurityContext: &corev1.SecurityContext{RunAsUser: &appUID}},
			{Name: "sidecar", Image: "registry.corp/sidecar:1"},
		},
		Volumes: []corev1.Volume{
			{Name: "cfg", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "tools", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "registry.corp/tools:2", PullPolicy: corev1.PullAlways}}},
		},
	}}
	raw, err := json.Marshal(appsv1.Deployment{Spec: appsv1.DeploymentSpec{Template: tmpl}})
	if err != nil {
		t.Fatal(err)
	}
	obj, err := Read(nil, "Deployment", raw)
	if err != nil {
		t.Fatal(err)
	}
	type img struct {
		Field, Pointer, PullPointer, Ref, Policy string
		Volume                                   bool
		RunAsUser                                *int64
	}
	var got []img
	for _, i := range obj.Images {
		got = append(got, img{i.Field, i.Pointer, i.PullPolicyPointer, i.Ref, i.PullPolicy, i.Volume, i.RunAsUser})
	}
	want := []img{
		{"spec.template.spec.containers[0].image", "/spec/template/spec/containers/0/image", "/spec/template/spec/containers/0/imagePullPolicy", "registry.corp/app:1", "", false, &appUID},
		{"spec.template.spec.containers[1].image", "/spec/template/spec/containers/1/image", "/spec/template/spec/containers/1/imagePullPolicy", "registry.corp/sidecar:1", "", false, &podUID},
		{"spec.template.spec.volumes[1].image.reference", "/spec/template/spec/volumes/1/image/reference", "/spec/template/spec/volumes/1/image/pullPolicy", "registry.corp/tools:2", "Always", true, nil},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("images (-want +got):\n%s", diff)
	}
}

// TestKnativeAndDeclaredKinds: Knative Serving's kinds are built in, keyed
// by group so a Knative Service is not a core Service; other kinds are
// read once declared.
func TestKnativeAndDeclaredKinds(t *testing.T) {
	container := `{"containers":[{"image":"registry.corp/app:1"}]}`
	tests := []struct {
		group, kind string
		extra       Kinds
		raw         string
		field       string // empty: no images
	}{
		{"serving.knative.dev", "Service", nil, `{"spec":{"template":{"spec":` + container + `}}}`, "spec.template.spec.containers[0].image"},
		{"serving.knative.dev", "Configuration", nil, `{"spec":{"template":{"spec":` + container + `}}}`, "spec.template.spec.containers[0].image"},
		{"serving.knative.dev", "Revision", nil, `{"spec":` + container + `}`, "spec.containers[0].image"},
		{"", "Service", nil, `{"spec":{"type":"ClusterIP"}}`, ""},
		{"argoproj.io", "Rollout", nil, `{"spec":{"template":{"spec":` + container + `}}}`, ""},
		{"argoproj.io", "Rollout", Kinds{"argoproj.io/Rollout": {"spec", "template"}}, `{"spec":{"template":{"spec":` + container + `}}}`, "spec.template.spec.containers[0].image"},
	}
	for _, tc := range tests {
		t.Run(Key(tc.group, tc.kind), func(t *testing.T) {
			obj, err := Read(tc.extra, Key(tc.group, tc.kind), []byte(tc.raw))
			if err != nil {
				t.Fatal(err)
			}
			var fields []string
			for _, img := range obj.Images {
				fields = append(fields, img.Field)
			}
			var want []string
			if tc.field != "" {
				want = []string{tc.field}
			}
			if diff := cmp.Diff(want, fields); diff != "" {
				t.Errorf("image fields (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPullSecretsAndServiceAccount(t *testing.T) {
	withSecrets := template()
	withSecrets.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}, {Name: ""}, {Name: "second"}}
	withSecrets.Spec.ServiceAccountName = "builder"
	deprecated := template()
	deprecated.Spec.DeprecatedServiceAccount = "old-style"
	tests := []struct {
		name        string
		key         string
		obj         any
		wantSecrets []string
		wantSA      string
	}{
		{"a pod's, the nameless entry passed over", "Pod", corev1.Pod{Spec: withSecrets.Spec}, []string{"regcred", "second"}, "builder"},
		{"a Deployment's template", "Deployment", appsv1.Deployment{Spec: appsv1.DeploymentSpec{Template: withSecrets}}, []string{"regcred", "second"}, "builder"},
		{"the deprecated serviceAccount field", "Pod", corev1.Pod{Spec: deprecated.Spec}, nil, "old-style"},
		{"none", "Job", batchv1.Job{Spec: batchv1.JobSpec{Template: template()}}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := json.Marshal(tt.obj)
			if err != nil {
				t.Fatal(err)
			}
			o, err := Read(nil, tt.key, raw)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantSecrets, o.PullSecrets); diff != "" {
				t.Errorf("pull secrets (-want +got):\n%s", diff)
			}
			if o.ServiceAccount != tt.wantSA {
				t.Errorf("service account %q, want %q", o.ServiceAccount, tt.wantSA)
			}
		})
	}
}
