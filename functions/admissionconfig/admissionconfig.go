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

	"sigs.k8s.io/yaml"
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
}

// Validate checks the options against the apiserver's own limits.
func (o Options) Validate() error {
	var errs []error
	u, err := url.Parse(o.URL)
	switch {
	case o.URL == "":
		errs = append(errs, errors.New("--url is required: the backend's ImageReview endpoint, e.g. https://admitfn.example/imagepolicy"))
	case err != nil:
		errs = append(errs, fmt.Errorf("--url %q is not a URL: %v", o.URL, err))
	case u.Scheme != "https":
		errs = append(errs, fmt.Errorf("--url %q must use https: kube-apiserver calls image policy backends over TLS only", o.URL))
	case u.Host == "":
		errs = append(errs, fmt.Errorf("--url %q has no host", o.URL))
	}
	if (o.ClientCert == "") != (o.ClientKey == "") {
		errs = append(errs, errors.New("--client-cert and --client-key go together"))
	}
	if o.KubeconfigPath == "" {
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
	ImagePolicy imagePolicy `json:"imagePolicy"`
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
		Plugins: []plugin{{
			Name: "ImagePolicyWebhook",
			Configuration: pluginConfiguration{ImagePolicy: imagePolicy{
				KubeConfigFile: o.KubeconfigPath,
				AllowTTL:       o.AllowTTL,
				DenyTTL:        o.DenyTTL,
				RetryBackoff:   o.RetryBackoff,
				DefaultAllow:   o.DefaultAllow,
			}},
		}},
	}
	if asJSON {
		b, err := json.MarshalIndent(ac, "", "  ")
		return append(b, '\n'), err
	}
	return yaml.Marshal(ac)
}

// kubeconfig is the subset of a v1 Config the webhook client reads.
type kubeconfig struct {
	APIVersion     string         `json:"apiVersion"`
	Kind           string         `json:"kind"`
	Clusters       []namedCluster `json:"clusters"`
	Users          []namedUser    `json:"users"`
	Contexts       []namedContext `json:"contexts"`
	CurrentContext string         `json:"current-context"`
}

type namedCluster struct {
	Name    string  `json:"name"`
	Cluster cluster `json:"cluster"`
}

type cluster struct {
	Server                   string `json:"server"`
	CertificateAuthority     string `json:"certificate-authority,omitempty"`
	CertificateAuthorityData []byte `json:"certificate-authority-data,omitempty"`
}

type namedUser struct {
	Name string `json:"name"`
	User user   `json:"user"`
}

type user struct {
	ClientCertificate     string `json:"client-certificate,omitempty"`
	ClientCertificateData []byte `json:"client-certificate-data,omitempty"`
	ClientKey             string `json:"client-key,omitempty"`
	ClientKeyData         []byte `json:"client-key-data,omitempty"`
}

type namedContext struct {
	Name    string      `json:"name"`
	Context contextSpec `json:"context"`
}

type contextSpec struct {
	Cluster string `json:"cluster"`
	User    string `json:"user"`
}

// Kubeconfig renders the kubeconfig that points the plugin at the backend.
func (o Options) Kubeconfig() ([]byte, error) {
	c := cluster{Server: o.URL}
	u := user{}
	if o.EmbedCerts {
		var err error
		if c.CertificateAuthorityData, err = readOptional(o.CAFile); err != nil {
			return nil, err
		}
		if u.ClientCertificateData, err = readOptional(o.ClientCert); err != nil {
			return nil, err
		}
		if u.ClientKeyData, err = readOptional(o.ClientKey); err != nil {
			return nil, err
		}
	} else {
		c.CertificateAuthority, u.ClientCertificate, u.ClientKey = o.CAFile, o.ClientCert, o.ClientKey
	}
	kc := kubeconfig{
		APIVersion:     "v1",
		Kind:           "Config",
		Clusters:       []namedCluster{{Name: "admitfn", Cluster: c}},
		Users:          []namedUser{{Name: "kube-apiserver", User: u}},
		Contexts:       []namedContext{{Name: "admitfn", Context: contextSpec{Cluster: "admitfn", User: "kube-apiserver"}}},
		CurrentContext: "admitfn",
	}
	return yaml.Marshal(kc)
}

func readOptional(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	return os.ReadFile(path)
}
