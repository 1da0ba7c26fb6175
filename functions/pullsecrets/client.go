package pullsecrets

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
)

// maxObject bounds a Secret or ServiceAccount read: the apiserver's own
// limit on an object is 1.5 MiB.
const maxObject = 2 << 20

// Client is a Getter that reads from the apiserver: a GET of one Secret or
// ServiceAccount at a time, all admitfn's RBAC role allows (config/). It
// asks with client-go's authenticated transport and decodes the two kinds
// itself: client-go's typed clientset would register every API group's
// types at start, which cost admitfn a third of its cold start and RSS.
type Client struct {
	host string
	http *http.Client
}

// NewClient returns a Client for the apiserver cfg points at.
func NewClient(cfg *rest.Config) (*Client, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	host := cfg.Host
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	return &Client{host: strings.TrimSuffix(host, "/"), http: hc}, nil
}

// Secret returns the Secret's type and data, ErrNotFound when there is none.
func (c *Client) Secret(ctx context.Context, namespace, name string) (string, map[string][]byte, error) {
	var s corev1.Secret
	if err := c.get(ctx, "secrets", namespace, name, &s); err != nil {
		return "", nil, err
	}
	return string(s.Type), s.Data, nil
}

// ServiceAccountPullSecrets returns the ServiceAccount's imagePullSecrets'
// names, ErrNotFound when there is no such ServiceAccount.
func (c *Client) ServiceAccountPullSecrets(ctx context.Context, namespace, name string) ([]string, error) {
	var sa corev1.ServiceAccount
	if err := c.get(ctx, "serviceaccounts", namespace, name, &sa); err != nil {
		return nil, err
	}
	var names []string
	for _, ref := range sa.ImagePullSecrets {
		if ref.Name != "" {
			names = append(names, ref.Name)
		}
	}
	return names, nil
}

// get reads one core/v1 object into into; 404 is ErrNotFound and 403
// wraps ErrForbidden.
func (c *Client) get(ctx context.Context, resource, namespace, name string, into any) error {
	u := fmt.Sprintf("%s/api/v1/namespaces/%s/%s/%s", c.host, url.PathEscape(namespace), resource, url.PathEscape(name))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxObject))
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if err := json.Unmarshal(body, into); err != nil {
			return fmt.Errorf("the apiserver's %s %s/%s does not decode: %v", resource, namespace, name, err)
		}
		return nil
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusForbidden:
		return fmt.Errorf("%w: %s", ErrForbidden, status(body))
	}
	return fmt.Errorf("the apiserver answered %s: %s", resp.Status, status(body))
}

// status is a Status object's message, else the body's start.
func status(body []byte) string {
	var s struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &s) == nil && s.Message != "" {
		return s.Message
	}
	if len(body) > 200 {
		body = body[:200]
	}
	return string(body)
}
