package admissionconfig

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
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

// Service is what admission-config reads of a Knative Service.
type Service struct {
	// Namespace and Name say which Service.
	Namespace, Name string
	// URL is status.url, https.
	URL string
	// MinScale is the revision template's min-scale annotation; 0 when
	// it is not set, which is Knative's default (config-autoscaler
	// min-scale: 0).
	MinScale int
}

// Knative Serving's min-scale annotation, and the spelling older
// releases used (still accepted).
const (
	minScaleKey       = "autoscaling.knative.dev/min-scale"
	legacyMinScaleKey = "autoscaling.knative.dev/minScale"
)

// ReadService reads the Knative Service namespace/name. It explains what
// is missing when the Service has no URL yet or only a plain HTTP one,
// which the apiserver would not call.
func ReadService(ctx context.Context, client dynamic.Interface, namespace, name string) (Service, error) {
	svc := Service{Namespace: namespace, Name: name}
	obj, err := client.Resource(KnativeServices).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return svc, fmt.Errorf("reading Knative Service %s/%s: %w", namespace, name, err)
	}
	annotations, _, _ := unstructured.NestedStringMap(obj.Object, "spec", "template", "metadata", "annotations")
	for _, key := range []string{minScaleKey, legacyMinScaleKey} {
		v, ok := annotations[key]
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return svc, fmt.Errorf("Knative Service %s/%s: annotation %s=%q is not a count of pods", namespace, name, key, v)
		}
		svc.MinScale = n
		break
	}
	raw, _, err := unstructured.NestedString(obj.Object, "status", "url")
	if err != nil {
		return svc, fmt.Errorf("Knative Service %s/%s: status.url: %w", namespace, name, err)
	}
	if raw == "" {
		return svc, fmt.Errorf("Knative Service %s/%s has no URL yet (%s); wait until `kn service describe %s -n %s` shows it", namespace, name, readiness(obj), name, namespace)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return svc, fmt.Errorf("Knative Service %s/%s: status.url %q: %w", namespace, name, raw, err)
	}
	if u.Scheme != "https" {
		return svc, fmt.Errorf("Knative Service %s/%s is served at %s, but kube-apiserver calls image policy backends over https only: enable Knative's external-domain TLS or map a domain with a certificate (DomainMapping), then run this again", namespace, name, raw)
	}
	svc.URL = raw
	return svc, nil
}

// FailClosedLockout explains why a fail-closed ImagePolicyWebhook
// (defaultAllow: false) must not point at this Service, or returns nil.
// The plugin judges every pod, with no exemption, including the pod
// Knative creates to wake the Service: at zero that pod waits for an
// answer only it can give, is refused when the call times out, and the
// ReplicaSet controller's retries meet the same refusal.
func (s Service) FailClosedLockout() error {
	if s.MinScale >= 1 {
		return nil
	}
	return fmt.Errorf("Knative Service %s/%s can scale to zero (%s is %s), and a fail-closed ImagePolicyWebhook (defaultAllow: false) pointed at it locks the cluster: "+
		"at zero, the pod Knative creates to wake it is itself judged by the plugin, whose call waits in the activator for that very pod, times out, and is refused; "+
		"no pod can then be created in any namespace until the apiserver's allow cache happens to answer. "+
		"Serve the plugin from a static pod on the control-plane nodes (admitfn static-pod), or set %s to 2 or more (config/400-image-policy.yaml ships 2), "+
		"or pass --default-allow to fail open, or --accept-lockout if you accept this",
		s.Namespace, s.Name, minScaleKey, s.minScaleText(), minScaleKey)
}

// IngressPathWarning is what remains for a fail-closed plugin pointed at a
// Service that does not scale to zero: every call passes Knative's
// ingress, whose pods the plugin judges too.
func (s Service) IngressPathWarning() string {
	return fmt.Sprintf("warning: Knative Service %s/%s keeps %d pod(s), but every call reaches it through Knative's ingress (and, below target-burst-capacity, the activator), whose pods this plugin judges too: "+
		"if they are all replaced at once while their images are not in the apiserver's allow cache, no new one can be admitted. "+
		"A static pod on the control-plane nodes (admitfn static-pod) has nothing on that path.", s.Namespace, s.Name, s.MinScale)
}

func (s Service) minScaleText() string {
	if s.MinScale == 0 {
		return "0 or unset"
	}
	return strconv.Itoa(s.MinScale)
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
