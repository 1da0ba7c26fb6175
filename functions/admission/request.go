package admission

import (
	"fmt"
	"maps"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/admitfn/admitfn/functions/internal/httpx"
	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/workload"
)

// Facts is what a handler learns from an AdmissionRequest.
type Facts struct {
	// Request for the policy engine.
	Request policy.Request
	// Images are the images to judge (and, for the mutating handler, to
	// patch), with their JSON pointers.
	Images []workload.Image
}

// Read turns an AdmissionRequest into policy facts, kinds adding the pod
// template kinds the policy declares to the built-in ones. On UPDATE only images
// that are new or changed are judged: unchanged ones were judged when they
// were admitted, and need no second registry call. For the
// pods/ephemeralcontainers subresource only ephemeral containers are.
func Read(req *admissionv1.AdmissionRequest, kinds workload.Kinds) (Facts, error) {
	kind := req.Kind.Kind
	key := workload.Key(req.Kind.Group, kind)
	f := Facts{Request: policy.Request{
		Namespace: req.Namespace,
		Kind:      kind,
		Name:      req.Name,
		Operation: string(req.Operation),
		User:      &policy.User{Name: req.UserInfo.Username, Groups: req.UserInfo.Groups},
	}}
	if req.Operation == admissionv1.Delete || req.Operation == admissionv1.Connect {
		if key == "Node" && req.Operation == admissionv1.Delete {
			// Which node is deleted, and by whom, is all the rule needs.
			f.Request.Node = &policy.NodeChange{}
		}
		return f, nil
	}
	switch {
	case workload.HoldsPods(kinds, key):
		obj, err := workload.Read(kinds, key, req.Object.Raw)
		if err != nil {
			return f, err
		}
		f.Request.Annotations = obj.Annotations
		f.Request.Puller = &policy.Puller{Secrets: obj.PullSecrets, ServiceAccount: obj.ServiceAccount}
		unchanged := map[string]bool{}
		if req.Operation == admissionv1.Update && len(req.OldObject.Raw) > 0 {
			// An annotation (break-glass) is read for every image: when
			// they differ, nothing is unchanged.
			if old, err := workload.Read(kinds, key, req.OldObject.Raw); err == nil && maps.Equal(old.Annotations, obj.Annotations) {
				for _, img := range old.Images {
					unchanged[judgedAs(img)] = true
				}
			}
		}
		for _, img := range obj.Images {
			if req.SubResource == "ephemeralcontainers" && !strings.Contains(img.Pointer, "/ephemeralContainers/") {
				continue
			}
			if unchanged[judgedAs(img)] {
				continue
			}
			f.Images = append(f.Images, img)
			f.Request.Images = append(f.Request.Images, policy.Image{Ref: img.Ref, Field: img.Field, Volume: img.Volume, RunAsUser: img.RunAsUser})
		}
	case key == "Node":
		node, err := nodeChange(req.Object.Raw, req.OldObject.Raw)
		if err != nil {
			return f, err
		}
		f.Request.Node = node
	case key == "Service":
		var svc struct {
			Spec struct {
				Type string `json:"type"`
			} `json:"spec"`
		}
		if err := httpx.DecodeJSON(req.Object.Raw, &svc); err != nil {
			return f, fmt.Errorf("Service object is malformed: %v", err)
		}
		f.Request.ServiceType = svc.Spec.Type
		if f.Request.ServiceType == "" {
			f.Request.ServiceType = "ClusterIP"
		}
	}
	return f, nil
}

// judgedAs is every fact of img a rule reads: where it is, the reference,
// whether it is a volume and the uid it runs as. An UPDATE leaves out an
// image only when all of them are as the old object had them: the same
// image under a new runAsUser is judged again.
func judgedAs(img workload.Image) string {
	uid := "unset"
	if img.RunAsUser != nil {
		uid = strconv.FormatInt(*img.RunAsUser, 10)
	}
	return fmt.Sprintf("%s=%s|volume=%t|uid=%s", img.Pointer, img.Ref, img.Volume, uid)
}

// nodeChange compares a Node with its old self (none on CREATE) as the
// NodeRestriction plugin does: semantically, nil and empty alike.
func nodeChange(raw, oldRaw []byte) (*policy.NodeChange, error) {
	readNode := func(raw []byte, what string) (*corev1.Node, error) {
		if len(raw) == 0 || string(raw) == "null" {
			return nil, fmt.Errorf("%s is missing", what)
		}
		var n corev1.Node
		if err := httpx.DecodeJSON(raw, &n); err != nil {
			return nil, fmt.Errorf("%s is malformed: %v", what, err)
		}
		return &n, nil
	}
	n, err := readNode(raw, "the Node object")
	if err != nil {
		return nil, err
	}
	c := &policy.NodeChange{NewLabels: n.Labels}
	if len(oldRaw) == 0 {
		c.ConfigSourceSet = n.Spec.ConfigSource != nil
		return c, nil
	}
	old, err := readNode(oldRaw, "the old Node object")
	if err != nil {
		return nil, err
	}
	c.OldLabels = old.Labels
	c.ConfigSourceSet = n.Spec.ConfigSource != nil && !equality.Semantic.DeepEqual(n.Spec.ConfigSource, old.Spec.ConfigSource)
	c.TaintsChanged = !equality.Semantic.DeepEqual(n.Spec.Taints, old.Spec.Taints)
	c.OwnerReferencesChanged = !equality.Semantic.DeepEqual(n.OwnerReferences, old.OwnerReferences)
	return c, nil
}
