// Command credentialprovider is a kubelet image credential provider plugin
// for tests: the same exec contract as ECR's, Artifact Registry's or ACR's
// (a CredentialProviderRequest, credentialprovider.kubelet.k8s.io/v1, on
// stdin; a CredentialProviderResponse on stdout), answering from its
// environment instead of a cloud: CREDENTIALS_REGISTRY, CREDENTIALS_USERNAME
// and CREDENTIALS_PASSWORD (set by the CredentialProviderConfig's env),
// cached per registry for CREDENTIALS_CACHE (a duration, default 5m). Each
// request is appended to the file CREDENTIALS_LOG names, when it is set,
// so a test can count the runs.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	credentialproviderv1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "credentialprovider:", err)
		os.Exit(1)
	}
}

func run() error {
	var req credentialproviderv1.CredentialProviderRequest
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		return fmt.Errorf("reading the request: %v", err)
	}
	if req.APIVersion != credentialproviderv1.SchemeGroupVersion.String() || req.Kind != "CredentialProviderRequest" {
		return fmt.Errorf("a request of apiVersion %q, kind %q", req.APIVersion, req.Kind)
	}
	if log := os.Getenv("CREDENTIALS_LOG"); log != "" {
		f, err := os.OpenFile(log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		fmt.Fprintln(f, req.Image)
		f.Close()
	}
	cache := 5 * time.Minute
	if v := os.Getenv("CREDENTIALS_CACHE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		cache = d
	}
	resp := credentialproviderv1.CredentialProviderResponse{
		TypeMeta:      metav1.TypeMeta{APIVersion: credentialproviderv1.SchemeGroupVersion.String(), Kind: "CredentialProviderResponse"},
		CacheKeyType:  credentialproviderv1.RegistryPluginCacheKeyType,
		CacheDuration: &metav1.Duration{Duration: cache},
		Auth: map[string]credentialproviderv1.AuthConfig{
			os.Getenv("CREDENTIALS_REGISTRY"): {Username: os.Getenv("CREDENTIALS_USERNAME"), Password: os.Getenv("CREDENTIALS_PASSWORD")},
		},
	}
	return json.NewEncoder(os.Stdout).Encode(resp)
}
