// Package workload finds the images in Kubernetes objects: pods and
// everything that holds a pod template, with the field path and JSON
// pointer of every image so a denial can name it and a patch can pin it.
// Every image the kubelet pulls counts: containers, init and ephemeral
// containers, and image volumes (spec.volumes[].image.reference), whose
// contents any container of the pod can run.
package workload

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/admitfn/admitfn/functions/internal/httpx"
)

// Image is one image reference in an object.
type Image struct {
	// Ref as written.
	Ref string
	// Field is the dotted path, e.g. "spec.template.spec.initContainers[0].image".
	Field string
	// Pointer is the JSON pointer for a patch, e.g.
	// "/spec/template/spec/initContainers/0/image".
	Pointer string
	// PullPolicyPointer points at the container's imagePullPolicy.
	PullPolicyPointer string
	// HasPullPolicy tells whether the object sets imagePullPolicy (a patch
	// must "add" where it is missing).
	HasPullPolicy bool
	// PullPolicy is the container's imagePullPolicy as written.
	PullPolicy string
	// Volume is set for an image volume: its image is mounted, not run
	// as a container, so rules about the image's own user do not apply.
	Volume bool
	// RunAsUser is the uid the pod asks this container to run as (the
	// container's securityContext.runAsUser, else the pod's), which
	// overrides the image's user; nil when neither sets one.
	RunAsUser *int64
}

// Object is what admitfn reads from an admitted object.
type Object struct {
	// Images in containers, initContainers, ephemeralContainers and
	// image volumes order.
	Images []Image
	// Annotations of the pod (template) the images run in.
	Annotations map[string]string
	// PullSecrets are the names of the pod's imagePullSecrets, in order:
	// the Secrets, in the pod's namespace, whose credentials the kubelet
	// tries first for every image of the pod.
	PullSecrets []string
	// ServiceAccount is the pod's serviceAccountName (or the deprecated
	// serviceAccount), "" when unset: whose pull Secrets a pod created
	// from a template gets when it names none.
	ServiceAccount string
}

// Kinds maps a kind (see Key) to where its objects keep their pod
// template: the path of an object with "metadata" and "spec", the pod's;
// an empty path is the object itself (a Pod, a Knative Revision).
type Kinds map[string][]string

// Key names a kind in Kinds: "Deployment" for the core and apps groups
// (kinds are unique there), "group/Kind" otherwise, so that a Knative
// Service is not a core Service.
func Key(group, kind string) string {
	switch group {
	case "", "apps", "batch":
		return kind
	}
	return group + "/" + kind
}

// builtin is where the kinds admitfn knows without configuration keep
// their pod template: the core and apps ones, and Knative Serving's (a
// Service's and a Configuration's spec.template is a pod template; a
// Revision's spec is a pod spec, inline). Read on every request, never
// written.
var builtin = Kinds{
	"Pod":                               {},
	"PodTemplate":                       {"template"},
	"Deployment":                        {"spec", "template"},
	"ReplicaSet":                        {"spec", "template"},
	"StatefulSet":                       {"spec", "template"},
	"DaemonSet":                         {"spec", "template"},
	"Job":                               {"spec", "template"},
	"ReplicationController":             {"spec", "template"},
	"CronJob":                           {"spec", "jobTemplate", "spec", "template"},
	"serving.knative.dev/Service":       {"spec", "template"},
	"serving.knative.dev/Configuration": {"spec", "template"},
	"serving.knative.dev/Revision":      {},
}

// templatePath finds key among the built-in kinds, then in extra.
func templatePath(extra Kinds, key string) ([]string, bool) {
	if p, ok := builtin[key]; ok {
		return p, true
	}
	p, ok := extra[key]
	return p, ok
}

// HoldsPods reports whether objects of kind key carry a pod spec, among
// the built-in kinds and extra.
func HoldsPods(extra Kinds, key string) bool {
	_, ok := templatePath(extra, key)
	return ok
}

type securityContext struct {
	RunAsUser *int64 `json:"runAsUser"`
}

type container struct {
	Image           *string          `json:"image"`
	ImagePullPolicy *string          `json:"imagePullPolicy"`
	SecurityContext *securityContext `json:"securityContext"`
}

type volume struct {
	Image *struct {
		Reference  *string `json:"reference"`
		PullPolicy *string `json:"pullPolicy"`
	} `json:"image"`
}

type podSpec struct {
	SecurityContext  *securityContext `json:"securityContext"`
	ImagePullSecrets []struct {
		Name string `json:"name"`
	} `json:"imagePullSecrets"`
	ServiceAccountName string `json:"serviceAccountName"`
	// ServiceAccount is the deprecated alias the apiserver still fills
	// from (and into) serviceAccountName.
	ServiceAccount      string      `json:"serviceAccount"`
	Containers          []container `json:"containers"`
	InitContainers      []container `json:"initContainers"`
	EphemeralContainers []container `json:"ephemeralContainers"`
	Volumes             []volume    `json:"volumes"`
}

type podTemplate struct {
	Metadata struct {
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec *podSpec `json:"spec"`
}

// Read extracts the images of an object of kind key (see Key) from its
// JSON, the built-in kinds and extra known. An object of a kind that holds
// no pods has none. A template that is missing is an error: the object is
// malformed.
func Read(extra Kinds, key string, raw []byte) (Object, error) {
	kind := key
	path, ok := templatePath(extra, key)
	if !ok {
		return Object{}, nil
	}
	if len(raw) == 0 || string(raw) == "null" {
		return Object{}, fmt.Errorf("the %s object is missing", kind)
	}
	node := json.RawMessage(raw)
	for i, key := range path {
		var m map[string]json.RawMessage
		if err := httpx.DecodeJSON(node, &m); err != nil {
			return Object{}, fmt.Errorf("%s: %s is not an object: %v", kind, dotted(path[:i]), err)
		}
		next, ok := m[key]
		if !ok || string(next) == "null" {
			return Object{}, fmt.Errorf("%s has no %s", kind, dotted(path[:i+1]))
		}
		node = next
	}
	var tmpl podTemplate
	if err := httpx.DecodeJSON(node, &tmpl); err != nil {
		return Object{}, fmt.Errorf("%s: the pod template at %s is malformed: %v", kind, dotted(path), err)
	}
	if tmpl.Spec == nil {
		return Object{}, fmt.Errorf("%s has no %s", kind, dotted(append(path, "spec")))
	}
	obj := Object{Annotations: tmpl.Metadata.Annotations, ServiceAccount: tmpl.Spec.ServiceAccountName}
	if obj.ServiceAccount == "" {
		obj.ServiceAccount = tmpl.Spec.ServiceAccount
	}
	for _, s := range tmpl.Spec.ImagePullSecrets {
		// The kubelet passes over an entry without a name.
		if s.Name != "" {
			obj.PullSecrets = append(obj.PullSecrets, s.Name)
		}
	}
	prefix := append(append([]string(nil), path...), "spec")
	for _, list := range []struct {
		name       string
		containers []container
	}{
		{"containers", tmpl.Spec.Containers},
		{"initContainers", tmpl.Spec.InitContainers},
		{"ephemeralContainers", tmpl.Spec.EphemeralContainers},
	} {
		for i, c := range list.containers {
			base := append(append([]string(nil), prefix...), list.name, fmt.Sprint(i))
			img := Image{
				Field:             fmt.Sprintf("%s.%s[%d].image", dotted(prefix), list.name, i),
				Pointer:           pointer(append(base, "image")),
				PullPolicyPointer: pointer(append(base, "imagePullPolicy")),
			}
			if c.Image != nil {
				img.Ref = *c.Image
			}
			if c.ImagePullPolicy != nil {
				img.HasPullPolicy, img.PullPolicy = true, *c.ImagePullPolicy
			}
			switch {
			case c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil:
				img.RunAsUser = c.SecurityContext.RunAsUser
			case tmpl.Spec.SecurityContext != nil:
				img.RunAsUser = tmpl.Spec.SecurityContext.RunAsUser
			}
			obj.Images = append(obj.Images, img)
		}
	}
	for i, v := range tmpl.Spec.Volumes {
		if v.Image == nil {
			continue
		}
		base := append(append([]string(nil), prefix...), "volumes", fmt.Sprint(i), "image")
		img := Image{
			Field:             fmt.Sprintf("%s.volumes[%d].image.reference", dotted(prefix), i),
			Pointer:           pointer(append(base, "reference")),
			PullPolicyPointer: pointer(append(base, "pullPolicy")),
			Volume:            true,
		}
		if v.Image.Reference != nil {
			img.Ref = *v.Image.Reference
		}
		if v.Image.PullPolicy != nil {
			img.HasPullPolicy, img.PullPolicy = true, *v.Image.PullPolicy
		}
		obj.Images = append(obj.Images, img)
	}
	return obj, nil
}

func dotted(path []string) string {
	if len(path) == 0 {
		return "the object"
	}
	return strings.Join(path, ".")
}

// pointer builds an RFC 6901 JSON pointer.
func pointer(path []string) string {
	var b strings.Builder
	for _, p := range path {
		b.WriteByte('/')
		b.WriteString(pointerEscaper.Replace(p))
	}
	return b.String()
}

// pointerEscaper escapes a JSON pointer token (RFC 6901). A Replacer is
// immutable and safe for concurrent use; building one per call cost more
// than the rest of a review.
var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")
