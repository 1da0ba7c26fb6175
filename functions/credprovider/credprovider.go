// Package credprovider runs the kubelet's image credential provider
// plugins: the CredentialProviderConfig (kubelet.config.k8s.io/v1) a node
// gives its kubelet with --image-credential-provider-config, and the same
// binaries from --image-credential-provider-bin-dir (ECR's, Artifact
// Registry's, ACR's, or any other). Each is run as the kubelet runs it — a
// CredentialProviderRequest (credentialprovider.kubelet.k8s.io/v1) on its
// stdin naming the image's repository, its config's args and env — and its
// answer is kept as the kubelet keeps it: by image, registry or for all,
// as its cacheKeyType says, for its cacheDuration (else the config's
// defaultCacheDuration). So admitfn reads a private registry with the
// credentials the node would pull with, without linking any cloud's SDK.
//
// Plugins in service account token mode (tokenAttributes) are refused:
// they need the token of the pod being pulled for, which an ImageReview
// does not carry.
package credprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeletconfigv1 "k8s.io/kubelet/config/v1"
	credentialproviderv1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"
	"sigs.k8s.io/yaml"

	"github.com/admitfn/admitfn/functions/internal/expiring"
	"github.com/admitfn/admitfn/functions/pullcreds"
)

// The API versions this package reads and speaks.
const (
	ConfigAPIVersion = "kubelet.config.k8s.io/v1"
	PluginAPIVersion = "credentialprovider.kubelet.k8s.io/v1"
)

// execTimeout caps one run of a plugin, as the kubelet caps it.
const execTimeout = time.Minute

// maxOutput bounds what a plugin may write: an answer is a few
// credentials.
const maxOutput = 1 << 20

// maxKept bounds the answers kept per plugin.
const maxKept = 1024

// Providers are the plugins of one CredentialProviderConfig.
type Providers struct {
	plugins []*plugin
	now     func() time.Time
	environ func() []string
	onError func(provider, repo string, err error)
}

type plugin struct {
	name        string
	path        string
	args        []string
	env         []string
	matchImages []string
	defaultTTL  time.Duration

	flights singleflight.Group
	mu      sync.Mutex
	kept    map[string]kept // by image, registry or globalKey
}

type kept struct {
	config pullcreds.Config
	until  time.Time
}

// globalKey keeps an answer whose cacheKeyType is Global.
const globalKey = "<global>"

// Option configures Providers.
type Option func(*Providers)

// WithClock sets the clock cache durations are read on.
func WithClock(now func() time.Time) Option { return func(p *Providers) { p.now = now } }

// WithFailureLog has every failed plugin run reported to f (the kubelet
// logs it and pulls without those credentials, and so does admitfn). The
// error never holds what the plugin answered.
func WithFailureLog(f func(provider, repo string, err error)) Option {
	return func(p *Providers) { p.onError = f }
}

// Load reads a CredentialProviderConfig from path — a file, or a folder
// whose *.json, *.yaml and *.yml files are read in name order and merged,
// as the kubelet reads it — with the plugins' binaries in binDir, and
// checks it as the kubelet does.
func Load(path, binDir string, opts ...Option) (*Providers, error) {
	files, err := configFiles(path)
	if err != nil {
		return nil, err
	}
	p := &Providers{now: time.Now, environ: os.Environ, onError: func(string, string, error) {}}
	for _, o := range opts {
		o(p)
	}
	seen := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var cfg kubeletconfigv1.CredentialProviderConfig
		if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
			return nil, fmt.Errorf("%s: %v", f, err)
		}
		if cfg.APIVersion != ConfigAPIVersion || cfg.Kind != "CredentialProviderConfig" {
			return nil, fmt.Errorf("%s: apiVersion %q, kind %q: want %s, CredentialProviderConfig", f, cfg.APIVersion, cfg.Kind, ConfigAPIVersion)
		}
		for i, cp := range cfg.Providers {
			pl, err := newPlugin(cp, binDir)
			if err != nil {
				return nil, fmt.Errorf("%s: providers[%d]: %v", f, i, err)
			}
			if seen[pl.name] {
				return nil, fmt.Errorf("%s: providers[%d]: the name %q is used twice", f, i, pl.name)
			}
			seen[pl.name] = true
			p.plugins = append(p.plugins, pl)
		}
	}
	if len(p.plugins) == 0 {
		return nil, fmt.Errorf("%s names no providers", path)
	}
	return p, nil
}

func configFiles(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".json" || ext == ".yaml" || ext == ".yml") {
			files = append(files, filepath.Join(path, e.Name()))
		}
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.json, *.yaml or *.yml files in %s", path)
	}
	return files, nil
}

func newPlugin(cp kubeletconfigv1.CredentialProvider, binDir string) (*plugin, error) {
	switch {
	case cp.Name == "" || cp.Name == "." || cp.Name == ".." || strings.ContainsAny(cp.Name, "/ "):
		return nil, fmt.Errorf("name %q is not a file name in the plugin folder", cp.Name)
	case cp.APIVersion != PluginAPIVersion:
		return nil, fmt.Errorf("%s: apiVersion %q is not supported; use %s", cp.Name, cp.APIVersion, PluginAPIVersion)
	case len(cp.MatchImages) == 0:
		return nil, fmt.Errorf("%s: matchImages is empty", cp.Name)
	case cp.DefaultCacheDuration == nil:
		return nil, fmt.Errorf("%s: defaultCacheDuration is required", cp.Name)
	case cp.DefaultCacheDuration.Duration < 0:
		return nil, fmt.Errorf("%s: defaultCacheDuration %v is negative", cp.Name, cp.DefaultCacheDuration.Duration)
	case cp.TokenAttributes != nil:
		return nil, fmt.Errorf("%s: tokenAttributes (service account token mode) is not supported: the plugin needs the token of the pod being pulled for, which admitfn does not hold", cp.Name)
	}
	for _, m := range cp.MatchImages {
		if !pullcreds.ValidPattern(m) {
			return nil, fmt.Errorf("%s: matchImages: %q is not a valid image pattern", cp.Name, m)
		}
	}
	if binDir == "" {
		return nil, fmt.Errorf("%s: no plugin folder is given", cp.Name)
	}
	pl := &plugin{
		name:        cp.Name,
		path:        filepath.Join(binDir, cp.Name),
		args:        slices.Clone(cp.Args),
		matchImages: slices.Clone(cp.MatchImages),
		defaultTTL:  cp.DefaultCacheDuration.Duration,
		kept:        map[string]kept{},
	}
	for _, e := range cp.Env {
		pl.env = append(pl.env, e.Name+"="+e.Value)
	}
	return pl, nil
}

// Lookup returns the credentials the node's plugins give for repo (an
// image's repository as the kubelet names it, "registry.corp/team/app"),
// in the kubelet's order. A plugin that fails gives none; the failure is
// reported to the failure log.
func (p *Providers) Lookup(ctx context.Context, repo string) []pullcreds.Auth {
	var keyring pullcreds.Keyring
	for _, pl := range p.plugins {
		if !pl.matches(repo) {
			continue
		}
		cfg, err := pl.credentials(ctx, repo, p)
		if err != nil {
			p.onError(pl.name, repo, err)
			continue
		}
		// An answer whose keys the kubelet would not read gives nothing
		// under them; there is nothing else to do with the error.
		_ = keyring.Add("credential provider "+pl.name, cfg)
	}
	return keyring.Lookup(repo)
}

func (pl *plugin) matches(repo string) bool {
	for _, m := range pl.matchImages {
		if pullcreds.MatchImage(m, repo) {
			return true
		}
	}
	return false
}

// credentials are the plugin's answer for repo: kept, or run for.
func (pl *plugin) credentials(ctx context.Context, repo string, p *Providers) (pullcreds.Config, error) {
	registry, _, _ := strings.Cut(repo, "/")
	now := p.now()
	pl.mu.Lock()
	for _, key := range []string{repo, registry, globalKey} {
		if k, ok := pl.kept[key]; ok && now.Before(k.until) {
			pl.mu.Unlock()
			return k.config, nil
		}
	}
	pl.mu.Unlock()
	v, err, _ := pl.flights.Do(repo, func() (any, error) {
		resp, err := pl.run(ctx, repo, p.environ())
		if err != nil {
			return nil, err
		}
		cfg := pullcreds.Config{}
		for key, a := range resp.Auth {
			cfg[key] = pullcreds.Entry{Username: a.Username, Password: a.Password}
		}
		var key string
		switch resp.CacheKeyType {
		case credentialproviderv1.ImagePluginCacheKeyType:
			key = repo
		case credentialproviderv1.RegistryPluginCacheKeyType:
			key = registry
		case credentialproviderv1.GlobalPluginCacheKeyType:
			key = globalKey
		default:
			return nil, fmt.Errorf("the plugin answered cacheKeyType %q, not Image, Registry or Global", resp.CacheKeyType)
		}
		ttl := pl.defaultTTL
		if resp.CacheDuration != nil {
			ttl = resp.CacheDuration.Duration
		}
		if ttl > 0 {
			pl.keep(key, cfg, p.now(), ttl)
		}
		return cfg, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(pullcreds.Config), nil
}

func (pl *plugin) keep(key string, cfg pullcreds.Config, now time.Time, ttl time.Duration) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	expiring.MakeRoom(pl.kept, maxKept, now, func(k kept) time.Time { return k.until })
	pl.kept[key] = kept{config: cfg, until: now.Add(ttl)}
}

// run execs the plugin once for repo, as the kubelet does.
func (pl *plugin) run(ctx context.Context, repo string, environ []string) (*credentialproviderv1.CredentialProviderResponse, error) {
	req, err := json.Marshal(credentialproviderv1.CredentialProviderRequest{
		TypeMeta: typeMeta("CredentialProviderRequest"),
		Image:    repo,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, execTimeout)
	defer cancel()
	var stdout, stderr limited
	stdout.max, stderr.max = maxOutput, 4096
	cmd := exec.CommandContext(ctx, pl.path, pl.args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(req), &stdout, &stderr
	cmd.Env = append(slices.Clone(environ), pl.env...)
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("running %s: %v: %s", pl.path, err, strings.TrimSpace(stderr.String()))
	}
	if stdout.over {
		return nil, fmt.Errorf("%s wrote more than %d bytes", pl.path, maxOutput)
	}
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &meta); err != nil {
		// Not wrapped: the answer may hold credentials.
		return nil, errors.New("the plugin's answer is not JSON")
	}
	if meta.APIVersion != PluginAPIVersion || meta.Kind != "CredentialProviderResponse" {
		return nil, fmt.Errorf("the plugin answered apiVersion %q, kind %q; want %s, CredentialProviderResponse", meta.APIVersion, meta.Kind, PluginAPIVersion)
	}
	var resp credentialproviderv1.CredentialProviderResponse
	if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil {
		return nil, errors.New("the plugin's answer is not a CredentialProviderResponse")
	}
	return &resp, nil
}

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: PluginAPIVersion, Kind: kind}
}

// limited keeps at most max bytes and notes whether more came. It holds
// its buffer in a field, not embedded: an embedded bytes.Buffer's
// ReadFrom would let io.Copy (exec's) write past the limit.
type limited struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (l *limited) Write(b []byte) (int, error) {
	if room := l.max - l.buf.Len(); len(b) > room {
		l.over = true
		l.buf.Write(b[:max(room, 0)])
		return len(b), nil
	}
	return l.buf.Write(b)
}

func (l *limited) Bytes() []byte  { return l.buf.Bytes() }
func (l *limited) String() string { return l.buf.String() }

var _ io.Writer = (*limited)(nil)
