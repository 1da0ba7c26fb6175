package pullcreds

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The rules themselves are held to the kubelet's code by test/kubelet;
// these are the cases a reader checks first.
func TestLookup(t *testing.T) {
	t.Parallel()
	var k Keyring
	if err := k.Add("secret team-a/regcred", Config{
		"registry.corp":               {Username: "team", Password: "a"},
		"registry.corp/team/app":      {Auth: base64.StdEncoding.EncodeToString([]byte("app:b"))},
		"*.gcr.io":                    {Username: "gcr", Password: "c"},
		"https://index.docker.io/v1/": {Username: "hub", Password: "d"},
		"registry.corp:5000":          {Username: "port", Password: "e"},
	}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		repo string
		want []string
	}{
		{"registry.corp/team/app", []string{"app", "team"}}, // the more specific key first
		{"registry.corp/other", []string{"team"}},
		{"registry.corp:5000/x", []string{"port"}},
		{"us.gcr.io/proj/app", []string{"gcr"}},
		{"gcr.io/proj/app", nil}, // *.gcr.io needs one more label
		{"docker.io/library/nginx", []string{"hub"}},
		{"evil.io/registry.corp/app", nil},
		{"registry.corp.evil.io/app", nil},
	}
	for _, tt := range tests {
		t.Run(tt.repo, func(t *testing.T) {
			var got []string
			for _, a := range k.Lookup(tt.repo) {
				got = append(got, a.Username)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Lookup(%s) (-want +got):\n%s", tt.repo, diff)
			}
		})
	}
}

func TestSecretConfig(t *testing.T) {
	t.Parallel()
	good := []byte(`{"auths":{"registry.corp":{"username":"u","password":"p"}}}`)
	tests := []struct {
		name    string
		typ     string
		data    map[string][]byte
		ok      bool
		wantErr string
	}{
		{"dockerconfigjson", SecretTypeDockerConfigJSON, map[string][]byte{DockerConfigJSONKey: good}, true, ""},
		{"dockercfg", SecretTypeDockercfg, map[string][]byte{DockercfgKey: []byte(`{"registry.corp":{"auth":"dTpw"}}`)}, true, ""},
		{"an Opaque Secret holds no credentials", "Opaque", map[string][]byte{DockerConfigJSONKey: good}, false, ""},
		{"the type's key missing", SecretTypeDockerConfigJSON, map[string][]byte{DockercfgKey: good}, false, ""},
		{"not JSON", SecretTypeDockerConfigJSON, map[string][]byte{DockerConfigJSONKey: []byte("{")}, false, "is not a docker config.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ok, err := SecretConfig(tt.typ, tt.data)
			if ok != tt.ok || (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("SecretConfig = %v, %v; want %v and an error containing %q", ok, err, tt.ok, tt.wantErr)
			}
		})
	}
}

// TestErrorsAndIdentitiesKeepSecrets: what goes into reasons, logs and
// cache keys never holds a password.
func TestErrorsAndIdentitiesKeepSecrets(t *testing.T) {
	t.Parallel()
	const password = "hunter2-very-secret"
	var k Keyring
	err := k.Add("secret ns/bad", Config{
		"registry.corp": {Auth: base64.StdEncoding.EncodeToString([]byte("no-colon-" + password))},
		"other.corp":    {Username: "u", Password: password},
	})
	if err == nil || strings.Contains(err.Error(), password) || !strings.Contains(err.Error(), `entry "registry.corp"`) {
		t.Errorf("Add = %v; want an error naming the entry and not its secret", err)
	}
	auths := k.Lookup("other.corp/app")
	if len(auths) != 1 {
		t.Fatalf("the good entry was not kept: %v", auths)
	}
	if id := auths[0].Identity(); strings.Contains(id, password) || id == (Auth{Username: "u", Password: "other"}).Identity() {
		t.Errorf("Identity %q holds the secret or does not tell credentials apart", id)
	}
}
