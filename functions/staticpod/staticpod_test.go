package staticpod

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

const digest = "@sha256:0000000000000000000000000000000000000000000000000000000000000001"

func valid() Options {
	o := Defaults()
	o.Image = "registry.example/admitfn" + digest
	return o
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Options)
		want   string // empty: valid
	}{
		{"defaults with a digest", func(o *Options) {}, ""},
		{"tag and digest", func(o *Options) { o.Image = "registry.example/admitfn:v1" + digest }, ""},
		{"no image", func(o *Options) { o.Image = "" }, "--image is required"},
		{"tag only", func(o *Options) { o.Image = "registry.example/admitfn:v1" }, "names no digest"},
		{"ko path", func(o *Options) { o.Image = "ko://github.com/admitfn/admitfn/functions/cmd/admitfn" }, `--image "ko://`},
		{"port", func(o *Options) { o.Port = 70000 }, "--port 70000"},
		{"relative host dir", func(o *Options) { o.HostDir = "etc/admitfn" }, "absolute path"},
		{"policy outside host dir", func(o *Options) { o.PolicyFile = "../policy.yaml" }, "--policy-file"},
		{"no TLS", func(o *Options) { o.TLSKey = "" }, "https only"},
		{"embedded policy", func(o *Options) { o.PolicyFile = "" }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := valid()
			tc.modify(&o)
			err := o.Validate()
			if tc.want == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestManifest decodes the written YAML strictly, as the kubelet reads it,
// and checks what makes it a safe backend for a fail-closed plugin.
func TestManifest(t *testing.T) {
	o := valid()
	o.ClientCA = "client-ca.crt"
	b, err := o.YAML()
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(b, &pod); err != nil {
		t.Fatalf("the manifest does not decode strictly as a Pod: %v\n%s", err, b)
	}
	if !pod.Spec.HostNetwork {
		t.Error("hostNetwork is false: the apiserver could reach the backend only through the pod network")
	}
	if pod.Spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", pod.Spec.PriorityClassName)
	}
	c := pod.Spec.Containers[0]
	want := []string{"serve", "--listen=127.0.0.1:8443", "--handlers=imagepolicy",
		"--tls-cert=/etc/admitfn/tls.crt", "--tls-key=/etc/admitfn/tls.key",
		"--client-ca=/etc/admitfn/client-ca.crt", "--policy=/etc/admitfn/policy.yaml"}
	if diff := cmp.Diff(want, c.Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	if c.Image != o.Image {
		t.Errorf("image %q, want %q", c.Image, o.Image)
	}
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Host != "127.0.0.1" || p.HTTPGet.Port.IntValue() != 8443 {
			t.Errorf("probe %+v, want HTTPS on 127.0.0.1:8443", p)
		}
	}
	if sc := c.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("securityContext %+v, want non-root with a read-only root", sc)
	}
	v := pod.Spec.Volumes[0]
	if v.HostPath == nil || v.HostPath.Path != "/etc/kubernetes/admitfn" || len(c.VolumeMounts) != 1 || !c.VolumeMounts[0].ReadOnly {
		t.Errorf("volume %+v mounted as %+v, want the host folder read-only", v, c.VolumeMounts)
	}
	if got := o.URL(); got != "https://127.0.0.1:8443/imagepolicy" {
		t.Errorf("URL() = %q", got)
	}
}
