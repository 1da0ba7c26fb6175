package admissionconfig

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// ImageReviewPath is where admitfn serves ImageReviews.
const ImageReviewPath = "/imagepolicy"

// KnativeServices is the resource of Knative Serving's v1 Service.
var KnativeServices = schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "services"}

// EndpointURL turns a service's base URL, as `kn service describe -o url`
// prints it, into the ImageReview endpoint; a URL that already has a path
// is kept as it is.
func EndpointURL(base string) string {
	u, err := url.Parse(base)
	if err != nil || (u.Path != "" && u.Path != "/") {
		return base
	}
	u.Path = ImageReviewPath
	return u.String()
}

// ServiceURL reads status.url of the Knative Service namespace/name. It
// explains what is missing when the Service has no URL yet or only a plain
// HTTP one, which the apiserver would not call.
func ServiceURL(ctx context.Context, client dynamic.Interface, namespace, name string) (string, error) {
	obj, err := client.Resource(KnativeServices).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("reading Knative Service %s/%s: %w", namespace, name, err)
	}
	raw, _, err := unstructured.NestedString(obj.Object, "status", "url")
	if err != nil {
		return "", fmt.Errorf("Knative Service %s/%s: status.url: %w", namespace, name, err)
	}
	if raw == "" {
		return "", fmt.Errorf("Knative Service %s/%s has no URL yet (%s); wait until `kn service describe %s -n %s` shows it", namespace, name, readiness(obj), name, namespace)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("Knative Service %s/%s: status.url %q: %w", namespace, name, raw, err)
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("Knative Service %s/%s is served at %s, but kube-apiserver calls image policy backends over https only: enable Knative's external-domain TLS or map a domain with a certificate (DomainMapping), then run this again", namespace, name, raw)
	}
	return raw, nil
}

// readiness summarizes the Service's Ready condition for error messages.
func readiness(obj *unstructured.Unstructured) string {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != "Ready" {
			continue
		}
		parts := []string{fmt.Sprintf("Ready=%v", m["status"])}
		for _, k := range []string{"reason", "message"} {
			if v, ok := m[k].(string); ok && v != "" {
				parts = append(parts, v)
			}
		}
		return strings.Join(parts, ": ")
	}
	return "no Ready condition yet"
}
