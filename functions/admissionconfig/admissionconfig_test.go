package admissionconfig

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

func valid() Options {
	return Options{URL: "https://localhost:1234/imagepolicy", KubeconfigPath: "/etc/kubernetes/admitfn/kubeconfig.yaml", AllowTTL: 100, DenyTTL: 50, RetryBackoff: 500}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Options)
		want   string // empty: valid
	}{
		{"seed 000 values", func(o *Options) {}, ""},
		{"defaults and disabled caches", func(o *Options) { o.AllowTTL, o.DenyTTL, o.RetryBackoff = 0, -1, 0 }, ""},
		{"limits", func(o *Options) { o.AllowTTL, o.DenyTTL, o.RetryBackoff = 1800, 1, 300000 }, ""},
		{"no url", func(o *Options) { o.URL = "" }, "--url is required"},
		{"http url", func(o *Options) { o.URL = "http://localhost:1234" }, "must use https"},
		{"todo url", func(o *Options) { o.URL = "TODO" }, "must use https"},
		{"no host", func(o *Options) { o.URL = "https:///imagepolicy" }, "has no host"},
		{"allow TTL too long", func(o *Options) { o.AllowTTL = 1801 }, "--allow-ttl 1801 is out of range"},
		{"deny TTL negative", func(o *Options) { o.DenyTTL = -5 }, "--deny-ttl -5 is out of range"},
		{"backoff too long", func(o *Options) { o.RetryBackoff = 300001 }, "--retry-backoff 300001 is out of range"},
		{"cert without key", func(o *Options) { o.ClientCert = "c.pem" }, "--client-cert and --client-key go together"},
		{"static policies alone", func(o *Options) { *o = Options{VAPStaticDir: "/etc/kubernetes/admitfn/vap"} }, ""},
		{"static policies, relative", func(o *Options) { o.VAPStaticDir = "vap" }, `--vap-static-dir "vap" must be an absolute path`},
		{"static webhooks alone", func(o *Options) { *o = Options{WebhookStaticDir: "/etc/kubernetes/admitfn/webhooks"} }, ""},
		{"static webhooks, relative", func(o *Options) { o.WebhookStaticDir = "webhooks" }, `--webhook-static-dir "webhooks" must be an absolute path`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := valid()
			tc.modify(&o)
			err := o.Validate()
			if tc.want == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestAdmissionConfigurationFormats(t *testing.T) {
	o := valid()
	want := map[string]any{
		"apiVersion": "apiserver.config.k8s.io/v1",
		"kind":       "AdmissionConfiguration",
		"plugins": []any{map[string]any{
			"name": "ImagePolicyWebhook",
			"configuration": map[string]any{"imagePolicy": map[string]any{
				"kubeConfigFile": "/etc/kubernetes/admitfn/kubeconfig.yaml",
				"allowTTL":       float64(100), "denyTTL": float64(50), "retryBackoff": float64(500), "defaultAllow": false,
			}},
		}},
	}
	for _, asJSON := range []bool{false, true} {
		b, err := o.AdmissionConfiguration(asJSON)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if asJSON {
			err = json.Unmarshal(b, &got)
		} else {
			err = yaml.Unmarshal(b, &got)
		}
		if err != nil {
			t.Fatalf("json=%v: %v\n%s", asJSON, err, b)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("json=%v (-want +got):\n%s", asJSON, diff)
		}
	}
}

// TestStaticPolicies: the plugins' configurations name the folders admitfn
// vap --static-dir and admitfn webhook-config --static-dir wrote.
func TestStaticPolicies(t *testing.T) {
	o := Options{VAPStaticDir: "/etc/kubernetes/admitfn/vap", WebhookStaticDir: "/etc/kubernetes/admitfn/webhooks"}
	b, err := o.AdmissionConfiguration(false)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"apiVersion": "apiserver.config.k8s.io/v1",
		"kind":       "AdmissionConfiguration",
		"plugins": []any{
			map[string]any{"name": "ValidatingAdmissionWebhook", "configuration": map[string]any{
				"apiVersion": "apiserver.config.k8s.io/v1", "kind": "WebhookAdmissionConfiguration",
				"staticManifestsDir": "/etc/kubernetes/admitfn/webhooks/validating",
			}},
			map[string]any{"name": "MutatingAdmissionWebhook", "configuration": map[string]any{
				"apiVersion": "apiserver.config.k8s.io/v1", "kind": "WebhookAdmissionConfiguration",
				"staticManifestsDir": "/etc/kubernetes/admitfn/webhooks/mutating",
			}},
			map[string]any{"name": "ValidatingAdmissionPolicy", "configuration": map[string]any{
				"apiVersion": "apiserver.config.k8s.io/v1", "kind": "ValidatingAdmissionPolicyConfiguration",
				"staticManifestsDir": "/etc/kubernetes/admitfn/vap",
			}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestKubeconfigLoadsWithClientGo reads the kubeconfig the way the
// apiserver's webhook client does.
func TestKubeconfigLoadsWithClientGo(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"ca.crt", "client.crt", "client.key"} {
		os.WriteFile(filepath.Join(dir, f), []byte("PEM "+f), 0o600)
	}
	for _, embed := range []bool{false, true} {
		o := valid()
		o.CAFile, o.ClientCert, o.ClientKey, o.EmbedCerts = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key"), embed
		b, err := o.Kubeconfig()
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := clientcmd.Load(b)
		if err != nil {
			t.Fatalf("embed=%v: clientcmd.Load: %v\n%s", embed, err, b)
		}
		rc, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
		if err != nil {
			t.Fatalf("embed=%v: %v", embed, err)
		}
		if rc.Host != o.URL {
			t.Errorf("embed=%v: host %q, want %q", embed, rc.Host, o.URL)
		}
		ca, cert := rc.TLSClientConfig.CAFile, rc.TLSClientConfig.CertFile
		if embed {
			ca, cert = string(rc.TLSClientConfig.CAData), string(rc.TLSClientConfig.CertData)
		} else {
			ca, cert = "PEM "+filepath.Base(ca), "PEM "+filepath.Base(cert)
		}
		if ca != "PEM ca.crt" || cert != "PEM client.crt" {
			t.Errorf("embed=%v: CA %q cert %q", embed, ca, cert)
		}
	}
}

func TestEndpointURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://image-policy.admitfn.example.com", "https://image-policy.admitfn.example.com/imagepolicy"},
		{"https://image-policy.admitfn.example.com/", "https://image-policy.admitfn.example.com/imagepolicy"},
		{"https://127.0.0.1:8443", "https://127.0.0.1:8443/imagepolicy"},
		{"https://gw.example.com/admitfn/imagepolicy", "https://gw.example.com/admitfn/imagepolicy"},
		{"https://h.example.com/imagepolicy", "https://h.example.com/imagepolicy"},
		{"::not a url", "::not a url"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, EndpointURL(tc.in)); diff != "" {
				t.Errorf("EndpointURL(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestFailClosedLockout(t *testing.T) {
	tests := []struct {
		minScale int
		want     []string // empty: no lockout
	}{
		{0, []string{`Knative Service admitfn/image-policy can scale to zero`, "0 or unset", "locks the cluster", "admitfn static-pod", "--default-allow", "--accept-lockout"}},
		{1, nil},
		{2, nil},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.minScale), func(t *testing.T) {
			svc := Service{Namespace: "admitfn", Name: "image-policy", URL: "https://image-policy.example", MinScale: tc.minScale}
			err := svc.FailClosedLockout()
			if len(tc.want) == 0 {
				if err != nil {
					t.Errorf("FailClosedLockout() = %v, want nil", err)
				}
				if w := svc.IngressPathWarning(); !strings.Contains(w, fmt.Sprintf("keeps %d pod(s)", tc.minScale)) || !strings.Contains(w, "ingress") {
					t.Errorf("IngressPathWarning() = %q", w)
				}
				return
			}
			if err == nil {
				t.Fatal("FailClosedLockout() = nil, want the circle explained")
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("FailClosedLockout() = %q, want it to contain %q", err, s)
				}
			}
		})
	}
}

// TestCallerToken writes the token file into both kubeconfigs and the
// webhook plugins into the AdmissionConfiguration, as the apiserver reads
// them (clientcmd for the kubeconfigs).
func TestCallerToken(t *testing.T) {
	o := valid()
	o.TokenFile = "/etc/kubernetes/admitfn/token"
	o.WebhookURL = "https://validating.admitfn.example.com"
	o.WebhookKubeconfigPath = "/etc/kubernetes/admitfn/webhook_kubeconfig.yaml"
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	kc, err := o.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(kc)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.AuthInfos["kube-apiserver"].TokenFile; got != o.TokenFile {
		t.Errorf("ImagePolicyWebhook kubeconfig tokenFile %q, want %q", got, o.TokenFile)
	}
	wkc, err := o.WebhookKubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	wcfg, err := clientcmd.Load(wkc)
	if err != nil {
		t.Fatal(err)
	}
	if u, ok := wcfg.AuthInfos["validating.admitfn.example.com"]; !ok || u.TokenFile != o.TokenFile {
		t.Errorf("webhook kubeconfig users %+v, want one named after the host with the token file", wcfg.AuthInfos)
	}
	ac, err := o.AdmissionConfiguration(false)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Plugins []struct {
			Name          string
			Configuration map[string]any
		}
	}
	if err := yaml.Unmarshal(ac, &got); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range got.Plugins {
		names = append(names, p.Name)
		if p.Name != "ImagePolicyWebhook" && (p.Configuration["kind"] != "WebhookAdmissionConfiguration" || p.Configuration["kubeConfigFile"] != o.WebhookKubeconfigPath) {
			t.Errorf("%s configuration %v", p.Name, p.Configuration)
		}
	}
	if diff := cmp.Diff([]string{"ImagePolicyWebhook", "ValidatingAdmissionWebhook", "MutatingAdmissionWebhook"}, names); diff != "" {
		t.Errorf("plugins (-want +got):\n%s", diff)
	}

	for name, modify := range map[string]func(*Options){
		"relative token file":          func(o *Options) { o.TokenFile = "token" },
		"webhook URL without a secret": func(o *Options) { o.TokenFile = "" },
		"plain HTTP webhook URL":       func(o *Options) { o.WebhookURL = "http://validating.example" },
	} {
		bad := o
		modify(&bad)
		if err := bad.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want an error", name)
		}
	}
}
