package kubelet

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubernetes/pkg/credentialprovider"
	"k8s.io/kubernetes/pkg/credentialprovider/secrets"

	"github.com/admitfn/admitfn/functions/pullcreds"
)

// Registry keys as docker configs write them, and images as pods name
// them: hosts with and without ports, schemes, /v1/ and /v2/ paths,
// repository paths, wildcard labels, Docker Hub in its spellings.
var (
	keys = []string{
		"registry.corp", "https://registry.corp", "http://registry.corp/v1/", "registry.corp/v2/",
		"registry.corp:5000", "registry.corp/team", "registry.corp/team/app", "registry.corp/tea",
		"*.corp", "*.registry.corp", "*.*.corp", "reg*.corp", "eu.registry.corp", "evil.io",
		"evil.io/registry.corp", "https://index.docker.io/v1/", "index.docker.io", "docker.io",
		"docker.io/library", "quay.io", "quay.io/coreos", "gcr.io", "*.gcr.io", "127.0.0.1:5000",
		"[::1]:5000", "localhost", "localhost:5000",
	}
	images = []string{
		"nginx", "library/nginx", "team/app", "docker.io/library/nginx", "index.docker.io/team/app",
		"registry.corp/team/app", "registry.corp/team/application", "registry.corp/other/app",
		"registry.corp:5000/team/app", "eu.registry.corp/team/app", "a.b.corp/x", "registry.corp.evil.io/x",
		"evil.io/registry.corp/app", "quay.io/coreos/etcd", "quay.io/prometheus/node-exporter",
		"gcr.io/distroless/static", "us.gcr.io/proj/app", "127.0.0.1:5000/app", "localhost:5000/app",
		"localhost/app", "[::1]:5000/app",
	}
)

// TestLookupMatchesTheKubelet builds random pull Secrets, gives them to
// the kubelet's keyring (credentialprovider/secrets.MakeDockerKeyring) and
// to admitfn's (pullcreds), and compares what each would try for every
// image, as the kubelet names it. Credentials under one key are compared
// as a set: the kubelet adds a config's entries in Go's map order.
func TestLookupMatchesTheKubelet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	compared, nonEmpty := 0, 0
	for round := range 400 {
		var pullSecrets []corev1.Secret
		var ours pullcreds.Keyring
		for s := range 1 + rng.IntN(3) {
			cfg := map[string]map[string]string{}
			for e := range 1 + rng.IntN(4) {
				user, pass := fmt.Sprintf("u%d-%d-%d", round, s, e), fmt.Sprintf("p%d", rng.IntN(1000))
				entry := map[string]string{"username": user, "password": pass}
				if rng.IntN(2) == 0 {
					entry = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}
				}
				cfg[keys[rng.IntN(len(keys))]] = entry
			}
			typ, dataKey := corev1.SecretTypeDockerConfigJson, corev1.DockerConfigJsonKey
			var doc any = map[string]any{"auths": cfg}
			if rng.IntN(3) == 0 {
				typ, dataKey, doc = corev1.SecretTypeDockercfg, corev1.DockerConfigKey, cfg
			}
			data, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("s%d", s)
			pullSecrets = append(pullSecrets, corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Type: typ, Data: map[string][]byte{dataKey: data}})
			parsed, ok, err := pullcreds.SecretConfig(string(typ), map[string][]byte{dataKey: data})
			if err != nil || !ok {
				t.Fatalf("SecretConfig(%s) = %v, %v", data, ok, err)
			}
			if err := ours.Add("secret ns/"+name, parsed); err != nil {
				t.Fatal(err)
			}
		}
		kubelet, err := secrets.MakeDockerKeyring(pullSecrets, &credentialprovider.BasicDockerKeyring{})
		if err != nil {
			t.Fatal(err)
		}
		for _, img := range images {
			named, err := reference.ParseNormalizedNamed(img)
			if err != nil {
				t.Fatal(err)
			}
			repo := named.Name() // what the kubelet looks up: "docker.io/library/nginx"
			theirs, _ := kubelet.Lookup(repo)
			var want, got []string
			for _, c := range theirs {
				want = append(want, c.Username+":"+c.Password)
			}
			for _, c := range ours.Lookup(repo) {
				got = append(got, c.Username+":"+c.Password)
			}
			compared++
			if len(want) > 0 {
				nonEmpty++
			}
			if !sameByKey(want, got) {
				t.Fatalf("round %d, image %s (%s):\nkubelet tries %v\nadmitfn tries %v\nsecrets: %s", round, img, repo, want, got, describe(pullSecrets))
			}
		}
	}
	t.Logf("%d lookups compared, %d of them with credentials", compared, nonEmpty)
	if nonEmpty < compared/10 {
		t.Errorf("only %d of %d lookups found credentials: the comparison says little", nonEmpty, compared)
	}
}

// sameByKey reports whether a and b hold the same credentials, in the same
// order up to credentials that come from one key: those are compared as a
// set (their order in the kubelet follows Go's map order).
func sameByKey(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

func describe(ss []corev1.Secret) string {
	var out []string
	for _, s := range ss {
		for _, v := range s.Data {
			out = append(out, string(v))
		}
	}
	return strings.Join(out, " ")
}

// TestMalformedSecretsFailAsTheKubeletFails: a pull Secret the kubelet
// cannot read fails admitfn's reading too.
func TestMalformedSecretsFailAsTheKubeletFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  corev1.SecretType
		key  string
		data string
	}{
		{"not JSON", corev1.SecretTypeDockerConfigJson, corev1.DockerConfigJsonKey, "{"},
		{"auth not base64", corev1.SecretTypeDockerConfigJson, corev1.DockerConfigJsonKey, `{"auths":{"registry.corp":{"auth":"%%%"}}}`},
		{"auth without a colon", corev1.SecretTypeDockerConfigJson, corev1.DockerConfigJsonKey, `{"auths":{"registry.corp":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("nocolon")) + `"}}}`},
		{"dockercfg not JSON", corev1.SecretTypeDockercfg, corev1.DockerConfigKey, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret := corev1.Secret{Type: tc.typ, Data: map[string][]byte{tc.key: []byte(tc.data)}}
			_, kubeletErr := secrets.MakeDockerKeyring([]corev1.Secret{secret}, &credentialprovider.BasicDockerKeyring{})
			cfg, _, err := pullcreds.SecretConfig(string(tc.typ), secret.Data)
			if err == nil {
				var k pullcreds.Keyring
				err = k.Add("secret", cfg)
			}
			if (kubeletErr != nil) != (err != nil) {
				t.Errorf("kubelet: %v; admitfn: %v; want both to fail or neither", kubeletErr, err)
			}
		})
	}
}
