// Package staticpod writes the static Pod manifest that runs admitfn's
// ImagePolicyWebhook backend on a control-plane node.
//
// It is the topology for a fail-closed plugin (defaultAllow: false). The
// plugin judges every pod with no exemption, so a backend that is itself a
// pod created through the apiserver — a Knative Service waking from zero,
// or its ingress and activator — can need its own answer to start. The
// kubelet runs a static pod from a file without asking admission, and the
// apiserver beside it reaches it on 127.0.0.1: no ingress, activator, DNS
// or CNI between them. (The kubelet's mirror pod of it is judged like any
// pod; refused or not, the static pod runs.)
package staticpod

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// mountPath is where the host folder appears inside the container.
const mountPath = "/etc/admitfn"

// Options describe the static pod.
type Options struct {
	// Image is admitfn's image, pinned by digest (ko build prints it).
	Image string
	// Port is the loopback port it serves HTTPS on.
	Port int
	// HostDir is the node's folder holding the files below; it is mounted
	// read-only.
	HostDir string
	// PolicyFile, TLSCert, TLSKey and ClientCA are file names inside
	// HostDir. PolicyFile empty serves the embedded policy; ClientCA empty
	// takes any client that reaches 127.0.0.1.
	PolicyFile, TLSCert, TLSKey, ClientCA string
	// Handlers are the endpoints to mount (imagepolicy by default).
	Handlers []string
	// Name and Namespace of the static pod (the mirror pod's name gains the
	// node's name).
	Name, Namespace string
}

// Defaults are the options `admitfn static-pod` starts from.
func Defaults() Options {
	return Options{
		Port:       8443,
		HostDir:    "/etc/kubernetes/admitfn",
		PolicyFile: "policy.yaml",
		TLSCert:    "tls.crt",
		TLSKey:     "tls.key",
		Handlers:   []string{"imagepolicy"},
		Name:       "admitfn-image-policy",
		Namespace:  "kube-system",
	}
}

// URL is the ImageReview endpoint the apiserver on the same node calls.
func (o Options) URL() string {
	return fmt.Sprintf("https://127.0.0.1:%d/imagepolicy", o.Port)
}

// Validate refuses what would not run, or would not run what was meant.
func (o Options) Validate() error {
	var errs []error
	switch ref, err := name.ParseReference(o.Image, name.StrictValidation); {
	case o.Image == "":
		errs = append(errs, errors.New("--image is required: admitfn's image by digest, as `ko build ./functions/cmd/admitfn` prints it"))
	case err != nil:
		errs = append(errs, fmt.Errorf("--image %q: %v", o.Image, err))
	default:
		if _, ok := ref.(name.Digest); !ok {
			errs = append(errs, fmt.Errorf("--image %q names no digest: a control-plane node should run exactly the image that was built (ko build prints IMAGE@sha256:...)", o.Image))
		}
	}
	if o.Port < 1 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("--port %d is not a TCP port", o.Port))
	}
	if !path.IsAbs(o.HostDir) {
		errs = append(errs, fmt.Errorf("--host-dir %q must be an absolute path on the node", o.HostDir))
	}
	for flag, f := range map[string]string{"--policy-file": o.PolicyFile, "--tls-cert-file": o.TLSCert, "--tls-key-file": o.TLSKey, "--client-ca-file": o.ClientCA} {
		if strings.Contains(f, "/") {
			errs = append(errs, fmt.Errorf("%s %q must be a file name inside --host-dir", flag, f))
		}
	}
	if o.TLSCert == "" || o.TLSKey == "" {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required: kube-apiserver calls image policy backends over https only"))
	}
	if len(o.Handlers) == 0 {
		errs = append(errs, errors.New("--handlers names no endpoint"))
	}
	return errors.Join(errs...)
}

// Args are the container's arguments: admitfn serve on loopback.
func (o Options) Args() []string {
	in := func(f string) string { return path.Join(mountPath, f) }
	args := []string{"serve",
		"--listen=127.0.0.1:" + strconv.Itoa(o.Port),
		"--handlers=" + strings.Join(o.Handlers, ","),
		"--tls-cert=" + in(o.TLSCert),
		"--tls-key=" + in(o.TLSKey),
	}
	if o.ClientCA != "" {
		args = append(args, "--client-ca="+in(o.ClientCA))
	}
	if o.PolicyFile != "" {
		args = append(args, "--policy="+in(o.PolicyFile))
	}
	return args
}

// Pod is the static pod.
func (o Options) Pod() *corev1.Pod {
	probe := func(p string, period int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Host: "127.0.0.1", Port: intstr.FromInt(o.Port), Path: p, Scheme: corev1.URISchemeHTTPS,
			}},
			PeriodSeconds: period,
		}
	}
	yes, no := true, false
	uid := int64(65532)
	labels := map[string]string{
		"app.kubernetes.io/name":    "image-policy",
		"app.kubernetes.io/part-of": "admitfn",
	}
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, Labels: labels},
		Spec: corev1.PodSpec{
			// On the node's loopback, beside the apiserver: no CNI, no
			// Service, no DNS on the way.
			HostNetwork:       true,
			PriorityClassName: "system-node-critical",
			// admitfn never calls the Kubernetes API.
			AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{
				Name:            "admitfn",
				Image:           o.Image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Args:            o.Args(),
				ReadinessProbe:  probe("/health/readiness", 5),
				LivenessProbe:   probe("/health/liveness", 10),
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("128Mi")},
				},
				SecurityContext: &corev1.SecurityContext{
					RunAsNonRoot:             &yes,
					RunAsUser:                &uid,
					RunAsGroup:               &uid,
					ReadOnlyRootFilesystem:   &yes,
					AllowPrivilegeEscalation: &no,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: mountPath, ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{
				Name: "config",
				VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
					Path: o.HostDir, Type: ptr(corev1.HostPathDirectory),
				}},
			}},
		},
	}
}

// YAML renders the pod for the kubelet's staticPodPath.
func (o Options) YAML() ([]byte, error) {
	b, err := yaml.Marshal(o.Pod())
	if err != nil {
		return nil, err
	}
	head := fmt.Sprintf("# admitfn's ImagePolicyWebhook backend as a static pod: put this file in the\n"+
		"# kubelet's staticPodPath (/etc/kubernetes/manifests) on every control-plane\n"+
		"# node. It serves %s, reading %s on the node.\n", o.URL(), o.HostDir)
	return append([]byte(head), b...), nil
}

func ptr[T any](v T) *T { return &v }
