package pullsecrets

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
)

// Client is a Getter that reads from the apiserver: a get of one Secret or
// ServiceAccount at a time, all admitfn's RBAC role allows (config/).
type Client struct {
	core corev1client.CoreV1Interface
}

// NewClient returns a Client for the apiserver cfg points at.
func NewClient(cfg *rest.Config) (*Client, error) {
	core, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{core: core}, nil
}

// Secret returns the Secret's type and data, ErrNotFound when there is none.
func (c *Client) Secret(ctx context.Context, namespace, name string) (string, map[string][]byte, error) {
	s, err := c.core.Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", nil, answer(err)
	}
	return string(s.Type), s.Data, nil
}

// ServiceAccountPullSecrets returns the ServiceAccount's imagePullSecrets'
// names, ErrNotFound when there is no such ServiceAccount.
func (c *Client) ServiceAccountPullSecrets(ctx context.Context, namespace, name string) ([]string, error) {
	sa, err := c.core.ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, answer(err)
	}
	var names []string
	for _, ref := range sa.ImagePullSecrets {
		if ref.Name != "" {
			names = append(names, ref.Name)
		}
	}
	return names, nil
}

// answer turns the apiserver's "not found" and "forbidden" into the
// sentinels the Reader keeps.
func answer(err error) error {
	switch {
	case apierrors.IsNotFound(err):
		return ErrNotFound
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w: %v", ErrForbidden, err)
	}
	return err
}
