package pullcreds

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Keyrings are keyrings tried one after another, as the kubelet tries a
// pod's pull Secrets before the node's own credentials.
type Keyrings []*Keyring

// Lookup is every keyring's Lookup, in order.
func (ks Keyrings) Lookup(repo string) []Auth {
	var out []Auth
	for _, k := range ks {
		out = append(out, k.Lookup(repo)...)
	}
	return out
}

// Keychain is ks for go-containerregistry: the first credential the
// kubelet would try for a repository, or anonymous when there is none.
func (ks Keyrings) Keychain() authn.Keychain { return keychain{ks} }

type keychain struct{ ks Keyrings }

func (k keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	auths := k.ks.Lookup(KubeletName(r.String()))
	if len(auths) == 0 {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{Username: auths[0].Username, Password: auths[0].Password}), nil
}

// KubeletName is a repository as the kubelet names it when it looks up
// credentials: go-containerregistry calls Docker Hub index.docker.io,
// the kubelet docker.io.
func KubeletName(repo string) string {
	if rest, ok := strings.CutPrefix(repo, "index.docker.io/"); ok {
		return "docker.io/" + rest
	}
	return repo
}

// ReadDockerConfigDir reads DIR/config.json, as `docker login` writes it
// and as a node keeps it for the kubelet.
func ReadDockerConfigDir(dir string) (*Keyring, error) {
	path := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := ParseDockerConfigJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s %v", path, err)
	}
	var k Keyring
	return &k, k.Add("docker config "+path, cfg)
}

// ReadSecretManifest reads a pull Secret from a manifest (YAML or JSON,
// data in base64 or stringData in clear, as kubectl applies it): where
// its credentials come from ("secret NS/NAME") and its config, for
// Keyring.Add. A Secret of another type is an error: it would pull
// nothing.
func ReadSecretManifest(data []byte) (source string, cfg Config, err error) {
	var s corev1.Secret
	if err := yaml.UnmarshalStrict(data, &s); err != nil {
		return "", nil, fmt.Errorf("is not a Secret manifest: %v", err)
	}
	if s.Kind != "Secret" {
		return "", nil, fmt.Errorf("is a %q, not a Secret", s.Kind)
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	for k, v := range s.StringData {
		s.Data[k] = []byte(v)
	}
	source = "secret " + s.Name
	if s.Namespace != "" {
		source = "secret " + s.Namespace + "/" + s.Name
	}
	cfg, ok, err := SecretConfig(string(s.Type), s.Data)
	switch {
	case err != nil:
		return "", nil, fmt.Errorf("%s %v", source, err)
	case !ok:
		return "", nil, fmt.Errorf("%s is of type %q with no %s: the kubelet pulls nothing with it (use type %s)", source, s.Type, DockerConfigJSONKey, SecretTypeDockerConfigJSON)
	}
	return source, cfg, nil
}
