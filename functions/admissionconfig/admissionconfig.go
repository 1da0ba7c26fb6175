// Package admissionconfig writes what kube-apiserver needs to call an
// ImagePolicyWebhook backend: the AdmissionConfiguration (with allowTTL,
// denyTTL, retryBackoff and defaultAllow) and the kubeconfig that holds the
// backend's URL and certificates. Values are checked against the limits the
// apiserver's plugin enforces, so a mistake shows here and not as an
// apiserver that will not start.
package admissionconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/admitfn/admitfn/functions/webhookconfig"
)

// Options describe the backend and the plugin's behaviour.
type Options struct {
	// URL of the backend's ImageReview endpoint; must be https.
	URL string
	// CAFile verifies the backend's serving certificate.
	CAFile string
	// ClientCert and ClientKey are what the apiserver presents to a backend
	// started with --client-ca.
	ClientCert, ClientKey string
	// EmbedCerts puts the PEM data into the kubeconfig instead of paths.
	EmbedCerts bool
	// KubeconfigPath is where the apiserver will read the kubeconfig.
	KubeconfigPath string
	// AllowTTL and DenyTTL are seconds the apiserver caches decisions: 0
	// means the plugin's default, -1 disables the cache, else 1 to 1800.
	AllowTTL, DenyTTL int
	// RetryBackoff is milliseconds between retries: 0 means the default
	// (500), -1 disables, else 1 to 300000.
	RetryBackoff int
	// DefaultAllow lets pods through when the backend cannot be reached.
	DefaultAllow bool
	// TokenFile is where the apiserver reads the caller token it sends as
	// a bearer token (admitfn serve --token-dir holds the same token).
	TokenFile string
	// WebhookURL is the base URL of the validating and mutating webhooks
	// (the `validating` Service): the file then also configures the
	// ValidatingAdmissionWebhook and MutatingAdmissionWebhook plugins with
	// a kubeconfig that sends TokenFile (and the client certificate) to
	// that host.
	WebhookURL string
	// WebhookKubeconfigPath is where the apiserver will read that
	// kubeconfig.
	WebhookKubeconfigPath string
	// VAPStaticDir is the folder of `admitfn vap --static-dir`: the
	// ValidatingAdmissionPolicy plugin loads its policies at start
	// (staticManifestsDir; kube-apiserver 1.37, feature gate
	// ManifestBasedAdmissionControlConfig, beta and on by default).
	VAPStaticDir string
	// WebhookStaticDir is the folder of `admitfn webhook-config
	// --static-dir`: the webhook plugins load the registrations in its
	// validating/ and mutating/ folders at start.
	WebhookStaticDir string
}

// Validate checks the options against the apiserver's own limits.
func (o Options) Validate() error {
	var errs []error
	u, err := url.Parse(o.URL)
	switch {
	case o.URL == "" && o.WebhookURL == "" && o.VAPStaticDir == "" && o.WebhookStaticDir == "":
		errs = append(errs, errors.New("--url is required: the backend's ImageReview endpoint, e.g. https://admitfn.example/imagepolicy (or --webhook-url, --vap-static-dir or --webhook-static-dir alone)"))
	case o.URL == "":
	case err != nil:
		errs = append(errs, fmt.Errorf("--url %q is not a URL: %v", o.URL, err))
	case u.Scheme != "https":
		errs = append(errs, fmt.Errorf("--url %q must use https: kube-apiserver calls image policy backends over TLS only", o.URL))
	case u.Host == "":
		errs = append(errs, fmt.Errorf("--url %q has no host", o.URL))
	}
	if o.WebhookURL != "" {
		w, err := url.Parse(o.WebhookURL)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("--webhook-url %q is not a URL: %v", o.WebhookURL, err))
		case w.Scheme != "https" || w.Host == "":
			errs = append(errs, fmt.Errorf("--webhook-url %q must be an https URL with a host: the webhooks' clientConfig.url", o.WebhookURL))
		}
		if o.TokenFile == "" && o.ClientCert == "" {
			errs = append(errs, errors.New("--webhook-url needs --token-file or --client-cert: it says what the apiserver sends the webhooks"))
		}
		if o.WebhookKubeconfigPath == "" {
			errs = append(errs, errors.New("the webhook kubeconfig path the apiserver reads is required"))
		}
	}
	if o.VAPStaticDir != "" && !filepath.IsAbs(o.VAPStaticDir) {
		errs = append(errs, fmt.Errorf("--vap-static-dir %q must be an absolute path: the apiserver reads it", o.VAPStaticDir))
	}
	if o.WebhookStaticDir != "" && !filepath.IsAbs(o.WebhookStaticDir) {
		errs = append(errs, fmt.Errorf("--webhook-static-dir %q must be an absolute path: the apiserver reads it", o.WebhookStaticDir))
	}
	if o.TokenFile != "" && !filepath.IsAbs(o.TokenFile) {
		errs = append(errs, fmt.Errorf("--token-file %q must be an absolute path: the apiserver reads it", o.TokenFile))
	}
	if (o.ClientCert == "") != (o.ClientKey == "") {
		errs = append(errs, errors.New("--client-cert and --client-key go together"))
	}
	if o.URL != "" && o.KubeconfigPath == "" {
		errs = append(errs, errors.New("the kubeconfig path the apiserver reads is required"))
	}
	check := func(flag string, v, lo, hi int, unit string) {
		if v != 0 && v != -1 && (v < lo || v > hi) {
			errs = append(errs, fmt.Errorf("%s %d is out of range: kube-apiserver accepts %d to %d %s, 0 for its default or -1 to disable", flag, v, lo, hi, unit))
		}
	}
	check("--allow-ttl", o.AllowTTL, 1, 1800, "seconds")
	check("--deny-ttl", o.DenyTTL, 1, 1800, "seconds")
	check("--retry-backoff", o.RetryBackoff, 1, 300000, "milliseconds")
	return errors.Join(errs...)
}

// admissionConfiguration is apiserver.config.k8s.io/v1 AdmissionConfiguration
// with the ImagePolicyWebhook plugin's configuration.
type admissionConfiguration struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Plugins    []plugin `json:"plugins"`
}

type plugin struct {
	Name          string              `json:"name"`
	Configuration pluginConfiguration `json:"configuration"`
}

type pluginConfiguration struct {
	ImagePolicy *imagePolicy `json:"imagePolicy,omitempty"`
	// The webhook plugins' WebhookAdmissionConfiguration.
	APIVersion     string `json:"apiVersion,omitempty"`
	Kind           string `json:"kind,omitempty"`
	KubeConfigFile string `json:"kubeConfigFile,omitempty"`
	// WebhookAdmissionConfiguration's and
	// ValidatingAdmissionPolicyConfiguration's.
	StaticManifestsDir string `json:"staticManifestsDir,omitempty"`
}

type imagePolicy struct {
	KubeConfigFile string `json:"kubeConfigFile"`
	AllowTTL       int    `json:"allowTTL"`
	DenyTTL        int    `json:"denyTTL"`
	RetryBackoff   int    `json:"retryBackoff"`
	DefaultAllow   bool   `json:"defaultAllow"`
}

// AdmissionConfiguration renders the AdmissionConfiguration as YAML or, with
// asJSON, JSON (both forms appear in the wild; the apiserver reads either).
func (o Options) AdmissionConfiguration(asJSON bool) ([]byte, error) {
	ac := admissionConfiguration{
		APIVersion: "apiserver.config.k8s.io/v1",
		Kind:       "AdmissionConfiguration",
	}
	if o.URL != "" {
		ac.Plugins = append(ac.Plugins, plugin{
			Name: "ImagePolicyWebhook",
			Configuration: pluginConfiguration{ImagePolicy: &imagePolicy{
				KubeConfigFile: o.KubeconfigPath,
				AllowTTL:       o.AllowTTL,
				DenyTTL:        o.DenyTTL,
				RetryBackoff:   o.RetryBackoff,
				DefaultAllow:   o.DefaultAllow,
			}},
		})
	}
	if o.WebhookURL != "" || o.WebhookStaticDir != "" {
		for _, p := range []struct{ name, static string }{
			{"ValidatingAdmissionWebhook", webhookconfig.StaticValidatingDir}, {"MutatingAdmissionWebhook", webhookconfig.StaticMutatingDir},
		} {
			c := pluginConfiguration{APIVersion: "apiserver.config.k8s.io/v1", Kind: "WebhookAdmissionConfiguration"}
			if o.WebhookURL != "" {
				c.KubeConfigFile = o.WebhookKubeconfigPath
			}
			if o.WebhookStaticDir != "" {
				c.StaticManifestsDir = filepath.Join(o.WebhookStaticDir, p.static)
			}
			ac.Plugins = append(ac.Plugins, plugin{Name: p.name, Configuration: c})
		}
	}
	if o.VAPStaticDir != "" {
		ac.Plugins = append(ac.Plugins, plugin{Name: "ValidatingAdmissionPolicy", Configuration: pluginConfiguration{
			APIVersion: "apiserver.config.k8s.io/v1", Kind: "ValidatingAdmissionPolicyConfiguration",
			StaticManifestsDir: o.VAPStaticDir,
		}})
	}
	if asJSON {
		b, err := json.MarshalIndent(ac, "", "  ")
		return append(b, '\n'), err
	}
	return yaml.Marshal(ac)
}

// Kubeconfig renders the kubeconfig that points the plugin at the backend.
func (o Options) Kubeconfig() ([]byte, error) {
	c := clientcmdapi.NewCluster()
	c.Server = o.URL
	u, err := o.user()
	if err != nil {
		return nil, err
	}
	if o.EmbedCerts {
		if c.CertificateAuthorityData, err = readOptional(o.CAFile); err != nil {
			return nil, err
		}
	} else {
		c.CertificateAuthority = o.CAFile
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["admitfn"] = c
	kc.AuthInfos["kube-apiserver"] = u
	kc.Contexts["admitfn"] = &clientcmdapi.Context{Cluster: "admitfn", AuthInfo: "kube-apiserver"}
	kc.CurrentContext = "admitfn"
	return clientcmd.Write(*kc)
}

// user is what the apiserver presents: the token file and the client
// certificate.
func (o Options) user() (*clientcmdapi.AuthInfo, error) {
	u := clientcmdapi.NewAuthInfo()
	u.TokenFile = o.TokenFile
	if !o.EmbedCerts {
		u.ClientCertificate, u.ClientKey = o.ClientCert, o.ClientKey
		return u, nil
	}
	var err error
	if u.ClientCertificateData, err = readOptional(o.ClientCert); err != nil {
		return u, err
	}
	u.ClientKeyData, err = readOptional(o.ClientKey)
	return u, err
}

// WebhookKubeconfig renders the kubeconfig of the webhook plugins'
// WebhookAdmissionConfiguration: one user named after the webhooks' host
// (the apiserver picks the user whose name matches the host it calls:
// host:port, else host for port 443, else a "*." wildcard). The webhook
// registrations' caBundle says which CA to trust, so no cluster is needed.
func (o Options) WebhookKubeconfig() ([]byte, error) {
	w, err := url.Parse(o.WebhookURL)
	if err != nil {
		return nil, err
	}
	u, err := o.user()
	if err != nil {
		return nil, err
	}
	kc := clientcmdapi.NewConfig()
	kc.AuthInfos[w.Host] = u
	return clientcmd.Write(*kc)
}

func readOptional(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	return os.ReadFile(path)
}
