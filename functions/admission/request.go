package admission

import (
	"fmt"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"

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
		return f, nil
	}
	switch {
	case workload.HoldsPods(kinds, key):
		obj, err := workload.Read(kinds, key, req.Object.Raw)
		if err != nil {
			return f, err
		}
		f.Request.Annotations = obj.Annotations
		unchanged := map[string]bool{}
		if req.Operation == admissionv1.Update && len(req.OldObject.Raw) > 0 {
			if old, err := workload.Read(kinds, key, req.OldObject.Raw); err == nil {
				for _, img := range old.Images {
					unchanged[img.Pointer+"="+img.Ref] = true
				}
			}
		}
		for _, img := range obj.Images {
			if req.SubResource == "ephemeralcontainers" && !strings.Contains(img.Pointer, "/ephemeralContainers/") {
				continue
			}
			if unchanged[img.Pointer+"="+img.Ref] {
				continue
			}
			f.Images = append(f.Images, img)
			f.Request.Images = append(f.Request.Images, policy.Image{Ref: img.Ref, Field: img.Field, Volume: img.Volume, RunAsUser: img.RunAsUser})
		}
	case key == "Node":
		node := &policy.NodeChange{}
		var err error
		if node.NewLabels, err = labels(req.Object.Raw); err != nil {
			return f, fmt.Errorf("Node object: %v", err)
		}
		if len(req.OldObject.Raw) > 0 {
			if node.OldLabels, err = labels(req.OldObject.Raw); err != nil {
				return f, fmt.Errorf("old Node object: %v", err)
			}
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

func labels(raw []byte) (map[string]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, fmt.Errorf("the object is missing")
	}
	var obj struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := httpx.DecodeJSON(raw, &obj); err != nil {
		return nil, fmt.Errorf("malformed: %v", err)
	}
	return obj.Metadata.Labels, nil
}
