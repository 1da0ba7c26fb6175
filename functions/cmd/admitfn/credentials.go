package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/admitfn/admitfn/functions/pullcreds"
	"github.com/admitfn/admitfn/functions/pullsecrets"
)

// checkKeyrings reads the credentials check judges with: the pull
// Secrets (the pod's, tried first, each matching one in turn) and the
// node's docker config. Only they are used: a run of check judges as the
// cluster's kubelet would, not with whatever the machine running it is
// logged in to.
func checkKeyrings(pullSecrets []string, dockerConfig string) (secrets, node pullcreds.Keyrings, err error) {
	// One keyring for all the pod's Secrets, as the kubelet merges them.
	var pod pullcreds.Keyring
	for _, f := range pullSecrets {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		source, cfg, err := readSecretManifest(data)
		if err != nil {
			return nil, nil, fmt.Errorf("--pull-secret %s: %v", f, err)
		}
		if err := pod.Add(source, cfg); err != nil {
			return nil, nil, fmt.Errorf("--pull-secret %s: %v", f, err)
		}
	}
	if pod.Len() > 0 {
		secrets = pullcreds.Keyrings{&pod}
	}
	if dockerConfig != "" {
		path := filepath.Join(dockerConfig, "config.json")
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("--docker-config: %v", err)
		}
		cfg, err := pullcreds.ParseDockerConfigJSON(data)
		if err != nil {
			return nil, nil, fmt.Errorf("--docker-config: %s %v", path, err)
		}
		var k pullcreds.Keyring
		if err := k.Add("docker config "+path, cfg); err != nil {
			return nil, nil, fmt.Errorf("--docker-config: %v", err)
		}
		node = pullcreds.Keyrings{&k}
	}
	return secrets, node, nil
}

// readSecretManifest reads a pull Secret from a manifest (YAML or JSON,
// data in base64 or stringData in clear, as kubectl applies it): where
// its credentials come from ("secret NS/NAME") and its config. A Secret
// of another type is an error: the kubelet would pull nothing with it.
func readSecretManifest(data []byte) (source string, cfg pullcreds.Config, err error) {
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
	cfg, ok, err := pullcreds.SecretConfig(string(s.Type), s.Data)
	switch {
	case err != nil:
		return "", nil, fmt.Errorf("%s %v", source, err)
	case !ok:
		return "", nil, fmt.Errorf("%s is of type %q with no %s: the kubelet pulls nothing with it (use type %s)", source, s.Type, pullcreds.DockerConfigJSONKey, pullcreds.SecretTypeDockerConfigJSON)
	}
	return source, cfg, nil
}

// keychain is credentials for go-containerregistry: the first the kubelet
// would try for a repository, or anonymous when there is none. The
// resolver's own (the node's) credentials are one credential per
// registry; a pod's, tried in turn, go through resolver.WithCredentials.
type keychain struct{ ks pullcreds.Keyrings }

func (k keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	auths := k.ks.Lookup(pullcreds.KubeletName(r.String()))
	if len(auths) == 0 {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{Username: auths[0].Username, Password: auths[0].Password}), nil
}

// pullSecretsClient reads pull Secrets from the apiserver kubeconfig
// names, or, with none, from the one of the pod admitfn runs in; outside
// a pod without a kubeconfig it returns nil: none are read.
func pullSecretsClient(kubeconfig string) (pullsecrets.Getter, error) {
	var cfg *rest.Config
	var err error
	switch {
	case kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		cfg, err = rest.InClusterConfig()
	default:
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// A review waits on these reads: they must not queue behind
	// client-go's default 5 per second, nor outlast the review.
	cfg.QPS, cfg.Burst, cfg.Timeout = 50, 100, 3*time.Second
	cfg.UserAgent = "admitfn/" + version
	c, err := pullsecrets.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	return c, nil
}
