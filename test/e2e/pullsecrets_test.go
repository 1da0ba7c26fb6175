//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/admitfn/admitfn/functions/pullsecrets"
	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/test/internal/harness"
)

// dockerConfigSecret is a kubernetes.io/dockerconfigjson Secret for host.
func dockerConfigSecret(name, host string, c registrytest.Credentials) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: c.DockerConfigJSON(host)},
	}
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates as the
// ServiceAccount namespace/name with a token the apiserver issues: admitfn
// reads pull secrets with exactly the rights config/ grants that account.
func serviceAccountKubeconfig(t testing.TB, cp *controlPlane, namespace, name string) string {
	t.Helper()
	expiry := int64(3600)
	tok, err := cp.Admin.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["e2e"] = &clientcmdapi.Cluster{Server: cp.URL, CertificateAuthority: cp.pki.CAFile}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	kc.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: name}
	kc.CurrentContext = "e2e"
	path := filepath.Join(cp.dir, name+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPullSecrets: the validating and mutating webhooks on a real
// kube-apiserver judge private images with the credentials each pod's
// kubelet would pull them with, read as config/'s ServiceAccount and RBAC
// allow, from two registries that want a password: one with basic
// authentication, one with the bearer-token realm flow.
func TestPullSecrets(t *testing.T) {
	dir := keptDir(t)
	p := newPKI(t, dir)
	cp := startControlPlane(t, dir, p, controlPlaneOptions{})
	ctx := context.Background()
	admin := cp.clientFor(t, "secrets-admin", "system:masters")

	right := registrytest.Credentials{Username: "team-a", Password: "the-right-password"}
	wrong := registrytest.Credentials{Username: "team-a", Password: "a-wrong-password"}
	registries := map[string]*registrytest.Registry{
		"basic": registrytest.New(t, registrytest.WithBasicAuth(right)),
		"token": registrytest.New(t, registrytest.WithTokenAuth(right)),
	}
	var hosts []string
	for _, reg := range registries {
		reg.Push("private/app:v1", registrytest.Image(t, nil))
		reg.Push("private/app:v2", registrytest.Image(t, nil))
		hosts = append(hosts, reg.Host())
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, fmt.Appendf(nil, `apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: e2e-pull-secrets}
spec:
  registry:
    insecure: [%[1]q, %[2]q]
    pullSecrets: {exemptNamespaces: [team-c]}
  rules:
  - name: private-readable
    images: ["%[1]s/**", "%[2]s/**"]
    resolvable: true
`, hosts[0], hosts[1]), 0o644)

	// config/'s ServiceAccount and role, as `ko apply -f config/` makes them.
	cp.namespace(t, "admitfn")
	if _, _, err := admin.kubectl(t, "", "apply", "-f", filepath.Join("..", "..", "config", "200-pull-secrets-rbac.yaml")); err != nil {
		t.Fatal(err)
	}
	kubeconfig := serviceAccountKubeconfig(t, cp, "admitfn", "admitfn-validating")
	backendCert, backendKey := p.server(t, "admitfn", "127.0.0.1")
	port := harness.FreePort(t)
	backend := startProc(t, dir, "admitfn", admitfnBin, "serve",
		"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--tls-cert", backendCert, "--tls-key", backendKey,
		"--handlers", "validating,mutating", "--policy", policyFile, "--kubeconfig", kubeconfig)
	baseURL := fmt.Sprintf("https://127.0.0.1:%d", port)
	waitReady(t, backend, harness.TLSClient(t, p.CAFile), baseURL+"/health/readiness", 10*time.Second)
	registerWebhooks(t, cp, baseURL)

	for _, ns := range []string{"team-a", "team-b", "team-c"} {
		cp.namespace(t, ns)
	}
	for name, reg := range registries {
		for ns, secrets := range map[string][]*corev1.Secret{
			"team-a": {dockerConfigSecret(name+"-regcred", reg.Host(), right), dockerConfigSecret(name+"-wrong", reg.Host(), wrong)},
			"team-c": {dockerConfigSecret(name+"-regcred", reg.Host(), right)},
		} {
			for _, s := range secrets {
				if _, err := cp.Admin.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
		}
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name + "-builder"}, ImagePullSecrets: []corev1.LocalObjectReference{{Name: name + "-regcred"}}}
		if _, err := cp.Admin.CoreV1().ServiceAccounts("team-a").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	malformed := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "malformed"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"x":{"auth":"not base64!"}}}`)}}
	if _, err := cp.Admin.CoreV1().Secrets("team-a").Create(ctx, malformed, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	n := 0
	podWith := func(image, serviceAccount string, secrets ...string) *corev1.Pod {
		n++
		pod := pod(fmt.Sprintf("p%d", n), []string{image}, nil, nil)
		pod.Spec.ServiceAccountName = serviceAccount
		for _, s := range secrets {
			pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
		}
		return pod
	}
	for _, flavour := range []string{"basic", "token"} {
		reg := registries[flavour]
		image := reg.Ref("private/app", ":v1")
		secret := func(s string) string { return flavour + "-" + s }
		t.Run(flavour, func(t *testing.T) {
			tests := []struct {
				name string
				ns   string
				pod  *corev1.Pod
				// want is nil for admitted, else parts of the denial.
				want []string
			}{
				{"the pod's own pull secret", "team-a", podWith(image, "", secret("regcred")), nil},
				{"right after, another namespace's pod with none", "team-b", podWith(image, ""),
					[]string{"refused admitfn access", "no pull secret of the pod's"}},
				{"another namespace's pod naming team-a's secret", "team-b", podWith(image, "", secret("regcred")),
					[]string{"refused admitfn access", "secret team-b/" + secret("regcred") + " was not found"}},
				{"the secret through the pod's serviceaccount only", "team-a", podWith(image, secret("builder")), nil},
				{"a wrong password", "team-a", podWith(image, "", secret("wrong")),
					[]string{"refused admitfn access", "with the pull secrets team-a/" + secret("wrong")}},
				{"a wrong password, then the right one", "team-a", podWith(image, "", secret("wrong"), secret("regcred")), nil},
				{"a malformed secret", "team-a", podWith(image, "", secret("regcred"), "malformed"),
					[]string{"cannot be judged", "pull secret team-a/malformed cannot be read"}},
				{"a namespace whose secrets admitfn may not read", "team-c", podWith(image, "", secret("regcred")),
					[]string{"admitfn reads no pull secrets in namespace team-c"}},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					_, err := cp.Admin.CoreV1().Pods(tt.ns).Create(ctx, tt.pod, metav1.CreateOptions{})
					if tt.want == nil {
						if err != nil {
							t.Fatalf("create = %v, want admitted", err)
						}
						return
					}
					wantDenied(t, err, append([]string{`admission webhook "workloads.validating.admitfn.dev" denied the request`}, tt.want...)...)
				})
			}
			t.Run("a Deployment's template: its serviceaccount's secrets", func(t *testing.T) {
				d := deploymentOf(secret("builds"), image)
				d.Spec.Template.Spec.ServiceAccountName = secret("builder")
				if _, err := cp.Admin.AppsV1().Deployments("team-a").Create(ctx, d, metav1.CreateOptions{}); err != nil {
					t.Errorf("team-a's Deployment with its builder account = %v, want admitted", err)
				}
				_, err := cp.Admin.AppsV1().Deployments("team-b").Create(ctx, deploymentOf(secret("builds"), image), metav1.CreateOptions{})
				wantDenied(t, err, "refused admitfn access")
			})
			t.Run("a token that expired is asked for again", func(t *testing.T) {
				reg.ExpireTokens()
				// v2 was never looked up: the registry is asked again.
				if _, err := cp.Admin.CoreV1().Pods("team-a").Create(ctx, podWith(reg.Ref("private/app", ":v2"), "", secret("regcred")), metav1.CreateOptions{}); err != nil {
					t.Errorf("after the registry expired its tokens: %v, want admitted", err)
				}
			})
		})
	}

	t.Run("admitfn gets one object at a time and nothing else", func(t *testing.T) {
		sa := kubeconfig
		for _, verb := range []string{"list secrets -n team-a", "get pods -n team-a", "list serviceaccounts -A"} {
			cmd := exec.Command(toolBin("kubectl"), append([]string{"--kubeconfig", sa, "auth", "can-i"}, strings.Fields(verb)...)...)
			out, _ := cmd.Output()
			if got := strings.TrimSpace(string(out)); got != "no" {
				t.Errorf("admitfn's account: can-i %s = %q, want no", verb, got)
			}
		}
	})

	t.Run("the client's answers: found, not found, forbidden", func(t *testing.T) {
		client := func(kubeconfig string) *pullsecrets.Client {
			cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				t.Fatal(err)
			}
			c, err := pullsecrets.NewClient(cfg)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		admitfn := client(kubeconfig)
		if typ, data, err := admitfn.Secret(ctx, "team-a", "basic-regcred"); err != nil || typ != string(corev1.SecretTypeDockerConfigJson) || len(data[corev1.DockerConfigJsonKey]) == 0 {
			t.Errorf("Secret(team-a/basic-regcred) = %q, %d keys, %v; want a dockerconfigjson Secret", typ, len(data), err)
		}
		if names, err := admitfn.ServiceAccountPullSecrets(ctx, "team-a", "basic-builder"); err != nil || len(names) != 1 || names[0] != "basic-regcred" {
			t.Errorf("ServiceAccountPullSecrets(team-a/basic-builder) = %v, %v", names, err)
		}
		if _, _, err := admitfn.Secret(ctx, "team-a", "missing"); !errors.Is(err, pullsecrets.ErrNotFound) {
			t.Errorf("a missing Secret: %v, want ErrNotFound", err)
		}
		// The namespace's default account has no role: forbidden, an
		// answer the Reader keeps.
		if _, _, err := client(serviceAccountKubeconfig(t, cp, "team-a", "default")).Secret(ctx, "team-a", "basic-regcred"); !errors.Is(err, pullsecrets.ErrForbidden) {
			t.Errorf("without the role: %v, want ErrForbidden", err)
		}
	})

	t.Run("no password reaches admitfn's log", func(t *testing.T) {
		log, err := os.ReadFile(backend.log)
		if err != nil {
			t.Fatal(err)
		}
		for _, pw := range []string{right.Password, wrong.Password, base64.StdEncoding.EncodeToString([]byte(right.Username + ":" + right.Password))} {
			if strings.Contains(string(log), pw) {
				t.Errorf("admitfn's log holds a credential")
			}
		}
	})
}

// TestImagePolicyNodeCredentials: an ImageReview carries no pull secret,
// so the ImagePolicyWebhook backend reads a private registry with the
// node's credentials: here from a kubelet credential provider plugin the
// test builds, run as the kubelet runs it.
func TestImagePolicyNodeCredentials(t *testing.T) {
	env := newWebhookEnv(t, "json")
	creds := registrytest.Credentials{Username: "robot", Password: "plugin-issued-token"}
	reg := registrytest.New(t, registrytest.WithTokenAuth(creds))
	reg.Push("private/app:v1", registrytest.Image(t, nil))
	other := registrytest.New(t, registrytest.WithTokenAuth(registrytest.Credentials{Username: "someone", Password: "else"}))
	other.Push("private/app:v1", registrytest.Image(t, nil))

	binDir := filepath.Join(env.dir, "credential-providers")
	build := exec.Command("go", "build", "-o", filepath.Join(binDir, "test-credentials"), "github.com/admitfn/admitfn/test/credentialprovider")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the plugin: %v\n%s", err, out)
	}
	runs := filepath.Join(env.dir, "plugin-runs")
	config := filepath.Join(env.dir, "credential-provider-config.yaml")
	os.WriteFile(config, fmt.Appendf(nil, `apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
- name: test-credentials
  apiVersion: credentialprovider.kubelet.k8s.io/v1
  matchImages: [%[1]q]
  defaultCacheDuration: 1m
  env:
  - {name: CREDENTIALS_REGISTRY, value: %[1]q}
  - {name: CREDENTIALS_USERNAME, value: %[2]q}
  - {name: CREDENTIALS_PASSWORD, value: %[3]q}
  - {name: CREDENTIALS_LOG, value: %[4]q}
`, reg.Host(), creds.Username, creds.Password, runs), 0o644)
	policyFile := filepath.Join(env.dir, "policy.yaml")
	os.WriteFile(policyFile, fmt.Appendf(nil, `apiVersion: policy.admitfn.dev/v1alpha1
kind: ImagePolicy
metadata: {name: e2e-node-credentials}
spec:
  registry: {insecure: [%[1]q, %[2]q]}
  rules:
  - name: private-readable
    images: ["%[1]s/**", "%[2]s/**"]
    resolvable: true
`, reg.Host(), other.Host()), 0o644)
	env.startBackend(t, policyFile, "--image-credential-provider-config", config, "--image-credential-provider-bin-dir", binDir)
	ctx := context.Background()
	pods := env.cp.Admin.CoreV1().Pods(ns)

	if _, err := pods.Create(ctx, pod("with-plugin", []string{reg.Ref("private/app", ":v1")}, nil, nil), metav1.CreateOptions{}); err != nil {
		t.Errorf("the registry the plugin has credentials for: %v, want admitted", err)
	}
	_, err := pods.Create(ctx, pod("no-plugin", []string{other.Ref("private/app", ":v1")}, nil, nil), metav1.CreateOptions{})
	wantForbidden(t, err, "image policy webhook backend denied one or more images", "refused admitfn access", "an ImageReview carries no pull secrets")
	// The plugin ran once, for the repository, as the kubelet would have
	// asked it; the registry the plugin does not match never ran it.
	got, _ := os.ReadFile(runs)
	if want := reg.Host() + "/private/app\n"; string(got) != want {
		t.Errorf("the plugin was asked for %q, want %q", got, want)
	}
}
