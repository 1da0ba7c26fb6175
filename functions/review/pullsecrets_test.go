package review

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/pullcreds"
	"github.com/admitfn/admitfn/functions/pullsecrets"
	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/functions/resolver"
)

// namespaces is a pullsecrets.Getter over Secrets ("ns/name" to a docker
// config) and ServiceAccounts ("ns/name" to Secret names). The real
// apiserver answers in test/e2e; here the review's use of the answers is
// checked.
type namespaces struct {
	secrets  map[string]string
	accounts map[string][]string
}

func (n namespaces) Secret(_ context.Context, ns, name string) (string, map[string][]byte, error) {
	cfg, ok := n.secrets[ns+"/"+name]
	if !ok {
		return "", nil, pullsecrets.ErrNotFound
	}
	return pullcreds.SecretTypeDockerConfigJSON, map[string][]byte{pullcreds.DockerConfigJSONKey: []byte(cfg)}, nil
}

func (n namespaces) ServiceAccountPullSecrets(_ context.Context, ns, name string) ([]string, error) {
	names, ok := n.accounts[ns+"/"+name]
	if !ok {
		return nil, pullsecrets.ErrNotFound
	}
	return names, nil
}

func dockerConfig(host string, c registrytest.Credentials) string {
	return string(c.DockerConfigJSON(host))
}

// TestPodsAreJudgedWithTheirOwnPullSecrets runs reviews one after another
// against one reviewer and one registry that wants a password: what one
// namespace's Secret read must not decide for a pod of another.
func TestPodsAreJudgedWithTheirOwnPullSecrets(t *testing.T) {
	t.Parallel()
	right := registrytest.Credentials{Username: "team-a", Password: "a-secret-password"}
	wrong := registrytest.Credentials{Username: "team-a", Password: "not-the-password"}
	reg := registrytest.New(t, registrytest.WithBasicAuth(right))
	reg.Push("private/app:v1", registrytest.Image(t, nil))
	host := reg.Host()
	p, err := policy.Parse(fmt.Appendf(nil, `
apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
spec:
  registry:
    insecure: [%[1]q]
    pullSecrets: {exemptNamespaces: [team-c]}
  rules:
  - name: resolvable
    images: ["%[1]s/**"]
    resolvable: true
`, host))
	if err != nil {
		t.Fatal(err)
	}
	ns := namespaces{
		secrets: map[string]string{
			"team-a/regcred":   dockerConfig(host, right),
			"team-a/wrong":     dockerConfig(host, wrong),
			"team-a/malformed": `{"auths": [`,
			"team-c/regcred":   dockerConfig(host, right),
		},
		accounts: map[string][]string{
			"team-a/default": {"regcred"},
			"team-b/default": nil,
		},
	}
	res, err := resolver.New(p.Registry, resolver.WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		t.Fatal(err)
	}
	rv := New(p, res, WithPullSecrets(pullsecrets.New(ns)))
	image := reg.Ref("private/app", ":v1")
	tests := []struct {
		name   string
		ns     string
		puller *policy.Puller
		// want is "" for allowed, else parts of the reason.
		want []string
	}{
		{"team A's pod with its secret", "team-a", &policy.Puller{Secrets: []string{"regcred"}}, nil},
		{"right after, team B's pod with none", "team-b", &policy.Puller{},
			[]string{"refused admitfn access", "no pull secret of the pod's"}},
		{"team B's pod naming team A's secret", "team-b", &policy.Puller{Secrets: []string{"regcred"}},
			[]string{"refused admitfn access", "secret team-b/regcred was not found"}},
		{"team A's pod through its serviceaccount", "team-a", &policy.Puller{}, nil},
		{"a wrong password", "team-a", &policy.Puller{Secrets: []string{"wrong"}},
			[]string{"refused admitfn access", "with the pull secrets team-a/wrong"}},
		{"a wrong password, then the right one", "team-a", &policy.Puller{Secrets: []string{"wrong", "regcred"}}, nil},
		{"a malformed secret", "team-a", &policy.Puller{Secrets: []string{"regcred", "malformed"}},
			[]string{"cannot be judged", "pull secret team-a/malformed cannot be read", "correct or remove the pull secret team-a/malformed"}},
		{"a namespace whose secrets admitfn does not read", "team-c", &policy.Puller{Secrets: []string{"regcred"}},
			[]string{"refused admitfn access", "admitfn reads no pull secrets in namespace team-c"}},
		{"an ImageReview: no pod, no secrets", "team-a", nil, []string{"refused admitfn access", "an ImageReview carries no pull secrets"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := policy.Request{Namespace: tt.ns, Kind: "Pod", Puller: tt.puller, Images: []policy.Image{{Ref: image, Field: "spec.containers[0].image"}}}
			d := rv.Review(context.Background(), Budget{}, req)
			if d.Allowed != (tt.want == nil) {
				t.Fatalf("allowed = %v, want %v: %s", d.Allowed, tt.want == nil, d.Reason())
			}
			for _, part := range tt.want {
				if !strings.Contains(d.Reason(), part) {
					t.Errorf("reason %q lacks %q", d.Reason(), part)
				}
			}
			if strings.Contains(d.Reason(), right.Password) || strings.Contains(d.Reason(), wrong.Password) {
				t.Errorf("reason holds a password: %s", d.Reason())
			}
		})
	}
}

// TestPinningUsesThePodsSecrets: the mutating handler's lookups (Facts)
// go with the pod's credentials too.
func TestPinningUsesThePodsSecrets(t *testing.T) {
	t.Parallel()
	right := registrytest.Credentials{Username: "u", Password: "p"}
	reg := registrytest.New(t, registrytest.WithTokenAuth(right))
	digest := reg.Push("private/app:v1", registrytest.Image(t, nil))
	p := resolvablePolicy(t, reg.Host())
	res, err := resolver.New(p.Registry, resolver.WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		t.Fatal(err)
	}
	ns := namespaces{secrets: map[string]string{"a/regcred": dockerConfig(reg.Host(), right)}, accounts: map[string][]string{}}
	snap := New(p, res, WithPullSecrets(pullsecrets.New(ns))).Snapshot()
	image := reg.Ref("private/app", ":v1")
	need := map[string]policy.Level{image: policy.LevelDigest}
	for _, tt := range []struct {
		ns, want string
	}{{"a", digest}, {"b", ""}} {
		req := policy.Request{Namespace: tt.ns, Puller: &policy.Puller{Secrets: []string{"regcred"}}}
		if got := snap.Facts(context.Background(), Budget{}, req, need)[image].Digest; got != tt.want {
			t.Errorf("namespace %s: digest %q, want %q", tt.ns, got, tt.want)
		}
	}
}

// BenchmarkReviewPullSecrets is a warm review of a private image: the
// pod's pull Secret and the image's facts both kept. Beside it, the same
// review of a public image with no credentials: what reading a pod's
// credentials adds to a review (the Secret's keyring, the lookup of the
// image's credentials, the cache key with their identities).
func BenchmarkReviewPullSecrets(b *testing.B) {
	creds := registrytest.Credentials{Username: "u", Password: "p"}
	for _, bc := range []struct {
		name   string
		opts   []registrytest.Option
		puller *policy.Puller
	}{
		{"public-no-credentials", nil, nil},
		{"private-pod-secret", []registrytest.Option{registrytest.WithBasicAuth(creds)}, &policy.Puller{Secrets: []string{"regcred"}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			reg := registrytest.New(b, bc.opts...)
			reg.Push("app:v1", registrytest.Image(b, nil))
			p := resolvablePolicy(b, reg.Host())
			res, err := resolver.New(p.Registry, resolver.WithKeychain(authn.NewMultiKeychain()))
			if err != nil {
				b.Fatal(err)
			}
			ns := namespaces{secrets: map[string]string{"a/regcred": dockerConfig(reg.Host(), creds)}}
			rv := New(p, res, WithPullSecrets(pullsecrets.New(ns)))
			req := policy.Request{Namespace: "a", Kind: "Pod", Puller: bc.puller, Images: []policy.Image{{Ref: reg.Ref("app", ":v1"), Field: "spec.containers[0].image"}}}
			if d := rv.Review(context.Background(), Budget{}, req); !d.Allowed {
				b.Fatal(d.Reason())
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				rv.Review(context.Background(), Budget{}, req)
			}
		})
	}
}
