package credprovider_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/admitfn/admitfn/functions/credprovider"
	"github.com/admitfn/admitfn/functions/imagefacts"
	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/internal/testclock"
	"github.com/admitfn/admitfn/functions/pullcreds"
	"github.com/admitfn/admitfn/functions/registrytest"
	"github.com/admitfn/admitfn/functions/resolver"
)

// plugin writes an executable credential provider into dir: a shell
// script, as real as any binary to the exec call, that appends each
// request it reads (and its args and $TEAM) to a log, then prints the
// answer in $dir/answer (or fails with $dir/fail on stderr).
func plugin(t *testing.T, dir, name string) {
	t.Helper()
	script := fmt.Sprintf(`#!/bin/sh
req=$(cat)
echo "$* TEAM=$TEAM $req" >> %[1]s/runs
if [ -f %[1]s/fail ]; then cat %[1]s/fail >&2; exit 1; fi
cat %[1]s/answer
`, dir)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func answer(t *testing.T, dir, cacheKeyType, cacheDuration string, auth map[string][2]string) {
	t.Helper()
	var entries []string
	for key, up := range auth {
		entries = append(entries, fmt.Sprintf(`%q: {"username": %q, "password": %q}`, key, up[0], up[1]))
	}
	duration := ""
	if cacheDuration != "" {
		duration = fmt.Sprintf(`"cacheDuration": %q,`, cacheDuration)
	}
	body := fmt.Sprintf(`{"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderResponse",
"cacheKeyType": %q, %s "auth": {%s}}`, cacheKeyType, duration, strings.Join(entries, ","))
	if err := os.WriteFile(filepath.Join(dir, "answer"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func runs(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "runs"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func config(t *testing.T, dir, body string) string {
	t.Helper()
	f := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

const oneProvider = `apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
- name: corp-credentials
  apiVersion: credentialprovider.kubelet.k8s.io/v1
  matchImages: ["*.corp", "registry.corp:5000/team"]
  defaultCacheDuration: 10m
  args: [get-credentials, --verbose]
  env: [{name: TEAM, value: platform}]
`

func users(auths []pullcreds.Auth) []string {
	var out []string
	for _, a := range auths {
		out = append(out, a.Username+" from "+a.Source)
	}
	return out
}

func TestThePluginIsRunAsTheKubeletRunsIt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	plugin(t, dir, "corp-credentials")
	answer(t, dir, "Image", "", map[string][2]string{"registry.corp": {"robot", "pw"}})
	p, err := credprovider.Load(config(t, dir, oneProvider), dir)
	if err != nil {
		t.Fatal(err)
	}
	got := p.Lookup(context.Background(), "registry.corp/team/app")
	if diff := cmp.Diff([]string{"robot from credential provider corp-credentials"}, users(got)); diff != "" {
		t.Errorf("credentials (-want +got):\n%s", diff)
	}
	want := `get-credentials --verbose TEAM=platform {"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"registry.corp/team/app"}`
	if diff := cmp.Diff([]string{want}, runs(t, dir)); diff != "" {
		t.Errorf("runs (-want +got):\n%s", diff)
	}
	// Not matched by matchImages: the plugin is not run.
	for _, repo := range []string{"docker.io/library/nginx", "a.b.corp/app", "registry.corp:5000/other", "evil.io/registry.corp"} {
		if got := p.Lookup(context.Background(), repo); got != nil {
			t.Errorf("Lookup(%s) = %v, want none", repo, got)
		}
	}
	if n := len(runs(t, dir)); n != 1 {
		t.Errorf("the plugin ran %d times, want once", n)
	}
}

// TestAnswersAreKeptAsTheirCacheKeyTypeSays: a lookup runs the plugin
// again exactly when the kubelet would.
func TestAnswersAreKeptAsTheirCacheKeyTypeSays(t *testing.T) {
	t.Parallel()
	auth := map[string][2]string{"*.corp": {"robot", "pw"}}
	// Each step looks up a repository after the clock moved on, and says
	// whether the plugin runs for it.
	type step struct {
		after time.Duration
		repo  string
		runs  bool
	}
	tests := []struct {
		name          string
		keyType       string
		cacheDuration string
		steps         []step
	}{
		{"Image", "Image", "", []step{
			{0, "registry.corp/a", true}, {0, "registry.corp/a", false}, {0, "registry.corp/b", true},
			{9 * time.Minute, "registry.corp/a", false}, {2 * time.Minute, "registry.corp/a", true}}},
		{"Registry", "Registry", "", []step{
			{0, "registry.corp/a", true}, {0, "registry.corp/b", false}, {0, "mirror.corp/a", true}}},
		{"Global", "Global", "", []step{
			{0, "registry.corp/a", true}, {0, "mirror.corp/b", false}}},
		{"the answer's cacheDuration wins over the default", "Registry", "30s", []step{
			{0, "registry.corp/a", true}, {29 * time.Second, "registry.corp/b", false}, {2 * time.Second, "registry.corp/b", true}}},
		{"cacheDuration 0: never kept", "Global", "0s", []step{
			{0, "registry.corp/a", true}, {0, "registry.corp/a", true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			plugin(t, dir, "corp-credentials")
			answer(t, dir, tt.keyType, tt.cacheDuration, auth)
			c := testclock.New(time.Unix(1_700_000_000, 0))
			p, err := credprovider.Load(config(t, dir, oneProvider), dir, credprovider.WithClock(c.Now))
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tt.steps {
				c.Advance(s.after)
				before := len(runs(t, dir))
				if got := p.Lookup(context.Background(), s.repo); len(got) != 1 {
					t.Fatalf("step %d: Lookup(%s) = %v, want one credential", i, s.repo, got)
				}
				if ran := len(runs(t, dir)) > before; ran != s.runs {
					t.Errorf("step %d (%s after %v): the plugin ran = %v, want %v", i, s.repo, s.after, ran, s.runs)
				}
			}
		})
	}
}

func TestAFailingPluginGivesNoCredentials(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		answer string
		fail   string
		want   string
	}{
		{name: "exits non-zero", fail: "no instance profile", want: "no instance profile"},
		{name: "another apiVersion", answer: `{"apiVersion": "credentialprovider.kubelet.k8s.io/v1alpha1", "kind": "CredentialProviderResponse", "cacheKeyType": "Image"}`, want: `apiVersion "credentialprovider.kubelet.k8s.io/v1alpha1"`},
		{name: "not JSON", answer: `password=hunter2`, want: "not JSON"},
		{name: "no cacheKeyType", answer: `{"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderResponse", "auth": {"registry.corp": {"username": "u", "password": "hunter2"}}}`, want: `cacheKeyType ""`},
		{name: "more than a megabyte", answer: `{"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderResponse", "cacheKeyType": "Image", "x": "` + strings.Repeat("a", 1<<20) + `"}`, want: "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			plugin(t, dir, "corp-credentials")
			os.WriteFile(filepath.Join(dir, "answer"), []byte(tt.answer), 0o644)
			if tt.fail != "" {
				os.WriteFile(filepath.Join(dir, "fail"), []byte(tt.fail), 0o644)
			}
			var logged []string
			p, err := credprovider.Load(config(t, dir, oneProvider), dir, credprovider.WithFailureLog(func(provider, repo string, err error) {
				logged = append(logged, fmt.Sprintf("%s %s: %v", provider, repo, err))
			}))
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Lookup(context.Background(), "registry.corp/app"); got != nil {
				t.Errorf("Lookup = %v, want none", got)
			}
			if len(logged) != 1 || !strings.Contains(logged[0], tt.want) || !strings.HasPrefix(logged[0], "corp-credentials registry.corp/app: ") {
				t.Errorf("logged %q, want one failure naming the provider, the repository and %q", logged, tt.want)
			}
			if strings.Contains(strings.Join(logged, ""), "hunter2") {
				t.Errorf("the log holds the plugin's answer: %q", logged)
			}
		})
	}
}

func TestConfigIsCheckedAsTheKubeletChecksIt(t *testing.T) {
	t.Parallel()
	provider := func(fields string) string {
		return "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- " + fields + "\n"
	}
	const ok = "name: p\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  matchImages: [registry.corp]\n  defaultCacheDuration: 1m"
	tests := []struct {
		name, body, want string
	}{
		{"another config version", strings.Replace(provider(ok), "kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v1beta1", 1), "apiVersion"},
		{"a plugin API not spoken", provider(strings.Replace(ok, "credentialprovider.kubelet.k8s.io/v1", "credentialprovider.kubelet.k8s.io/v1alpha1", 1)), "is not supported"},
		{"no matchImages", provider(strings.Replace(ok, "matchImages: [registry.corp]", "matchImages: []", 1)), "matchImages is empty"},
		{"no defaultCacheDuration", provider(strings.Replace(ok, "\n  defaultCacheDuration: 1m", "", 1)), "defaultCacheDuration is required"},
		{"a name that is a path", provider(strings.Replace(ok, "name: p", "name: ../../bin/sh", 1)), "not a file name"},
		{"service account token mode", provider(ok + "\n  tokenAttributes: {serviceAccountTokenAudience: x, cacheType: Token, requireServiceAccount: true}"), "tokenAttributes"},
		{"an unknown field", provider(ok + "\n  matchImage: [typo]"), "unknown field"},
		{"no providers", "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders: []\n", "names no providers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := credprovider.Load(config(t, dir, tt.body), dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load = %v, want an error with %q", err, tt.want)
			}
		})
	}
	t.Run("a folder: its files merged in name order, a name used twice refused", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "a.yaml"), []byte(provider(ok)), 0o644)
		os.WriteFile(filepath.Join(dir, "b.json"), []byte(`{"apiVersion":"kubelet.config.k8s.io/v1","kind":"CredentialProviderConfig","providers":[{"name":"p","apiVersion":"credentialprovider.kubelet.k8s.io/v1","matchImages":["x.io"],"defaultCacheDuration":"1m"}]}`), 0o644)
		if _, err := credprovider.Load(dir, dir); err == nil || !strings.Contains(err.Error(), `"p" is used twice`) {
			t.Errorf("Load = %v, want the duplicate name refused", err)
		}
	})
}

// TestTheResolverReadsWithTheNodesPlugins: a registry that wants a token
// is read with the credentials the node's plugin gives, and without the
// plugin it refuses.
func TestTheResolverReadsWithTheNodesPlugins(t *testing.T) {
	t.Parallel()
	creds := registrytest.Credentials{Username: "robot", Password: "plugin-token"}
	reg := registrytest.New(t, registrytest.WithTokenAuth(creds))
	reg.Push("private/app:v1", registrytest.Image(t, nil))
	dir := t.TempDir()
	plugin(t, dir, "corp-credentials")
	answer(t, dir, "Registry", "", map[string][2]string{reg.Host(): {creds.Username, creds.Password}})
	p, err := credprovider.Load(config(t, dir, strings.Replace(oneProvider, `["*.corp", "registry.corp:5000/team"]`, fmt.Sprintf("[%q]", reg.Host()), 1)), dir)
	if err != nil {
		t.Fatal(err)
	}
	settings := imagefacts.Registry{Insecure: []imageref.HostPattern{mustPattern(t, reg.Host())}, Timeout: 10 * time.Second, CacheSize: 16}
	ref, err := imageref.Parse(reg.Ref("private/app", ":v1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name       string
		opts       []resolver.Option
		authorized bool
	}{
		{"with the node's plugin", []resolver.Option{resolver.WithNodeCredentials(p)}, true},
		{"without", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := resolver.New(settings, append(tt.opts, resolver.WithKeychain(authn.NewMultiKeychain()))...)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			f := r.Resolve(context.Background(), ref, imagefacts.LevelDigest)
			if got := f.Digest != "" && !f.Unauthorized; got != tt.authorized {
				t.Errorf("resolved = %v, want %v: %+v", got, tt.authorized, f)
			}
		})
	}
}

func mustPattern(t *testing.T, host string) imageref.HostPattern {
	t.Helper()
	hp, err := imageref.ParseHostPattern(host)
	if err != nil {
		t.Fatal(err)
	}
	return hp
}
