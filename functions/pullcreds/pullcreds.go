// Package pullcreds holds registry credentials as the kubelet reads and
// matches them: docker config files and the pull Secrets of a pod
// (kubernetes.io/dockerconfigjson and kubernetes.io/dockercfg), keyed by
// registry host, optionally with a port, a path and wildcard host labels,
// and looked up for an image in the kubelet's order. admitfn must read a
// private image with exactly the credentials the kubelet would pull it
// with — no more (another tenant's) and no fewer — so this package follows
// k8s.io/kubernetes/pkg/credentialprovider rule for rule, and a
// differential test in test/kubelet holds it to that code.
package pullcreds

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Auth is one credential for a registry.
type Auth struct {
	Username, Password string
	// Source says where it came from ("secret team-a/regcred", "docker
	// config"), for reasons and logs; never the secret itself.
	Source string
}

// Identity is a digest of the credential, fit for cache keys and logs:
// answers learnt with one credential must never be served to a request
// that holds another, and nothing secret goes into a key.
func (a Auth) Identity() string {
	sum := sha256.Sum256([]byte(a.Username + "\x00" + a.Password))
	return hex.EncodeToString(sum[:8])
}

// Entry is one registry's entry in a docker config.
type Entry struct {
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	Email    string `json:"email,omitempty"`
	// Auth is base64("username:password"); when set it wins over
	// Username and Password, as the kubelet reads it.
	Auth string `json:"auth,omitempty"`
}

// credentials is the entry's username and password as the kubelet
// decodes them.
func (e Entry) credentials() (string, string, error) {
	if e.Auth == "" {
		return e.Username, e.Password, nil
	}
	// Padded base64 when it ends in "=", unpadded otherwise, as the
	// kubelet decodes it.
	var decoded []byte
	var err error
	if strings.HasSuffix(strings.TrimSpace(e.Auth), "=") {
		decoded, err = base64.StdEncoding.DecodeString(e.Auth)
	} else {
		decoded, err = base64.RawStdEncoding.DecodeString(e.Auth)
	}
	if err != nil {
		return "", "", errors.New("its auth field is not base64")
	}
	user, pass, ok := strings.Cut(string(decoded), ":")
	if !ok {
		return "", "", errors.New("its auth field is not base64(username:password)")
	}
	return user, pass, nil
}

// Config is a docker config's registries: what a
// kubernetes.io/dockercfg Secret holds, and the "auths" of a
// kubernetes.io/dockerconfigjson one.
type Config map[string]Entry

// ParseDockerConfigJSON reads a config.json ({"auths": {...}}).
func ParseDockerConfigJSON(data []byte) (Config, error) {
	var doc struct {
		Auths Config `json:"auths"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("is not a docker config.json: %v", err)
	}
	return doc.Auths, nil
}

// ParseDockercfg reads a legacy .dockercfg (the registries at the top).
func ParseDockercfg(data []byte) (Config, error) {
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("is not a .dockercfg: %v", err)
	}
	return cfg, nil
}

// Secret types and keys, as core/v1 names them.
const (
	SecretTypeDockerConfigJSON = "kubernetes.io/dockerconfigjson"
	SecretTypeDockercfg        = "kubernetes.io/dockercfg"
	DockerConfigJSONKey        = ".dockerconfigjson"
	DockercfgKey               = ".dockercfg"
)

// SecretConfig reads a pull Secret as the kubelet does: a
// kubernetes.io/dockerconfigjson Secret's .dockerconfigjson, or a
// kubernetes.io/dockercfg Secret's .dockercfg. Any other Secret holds no
// credentials (ok false) and is passed over, as the kubelet passes it
// over; one of those types whose data does not parse is an error (the
// kubelet cannot pull with it either).
func SecretConfig(typ string, data map[string][]byte) (cfg Config, ok bool, err error) {
	switch {
	case typ == SecretTypeDockerConfigJSON && len(data[DockerConfigJSONKey]) > 0:
		cfg, err = ParseDockerConfigJSON(data[DockerConfigJSONKey])
	case typ == SecretTypeDockercfg && len(data[DockercfgKey]) > 0:
		cfg, err = ParseDockercfg(data[DockercfgKey])
	default:
		return nil, false, nil
	}
	return cfg, err == nil, err
}

// Keyring is credentials keyed by registry, looked up as the kubelet
// looks them up. The zero Keyring holds none.
type Keyring struct {
	// index is every key once, reverse-sorted so that a more specific
	// key ("quay.io/coreos") comes before a shorter one ("quay.io").
	index []string
	creds map[string][]Auth
	// parsed is each key of index as urlsMatch reads it, parsed once.
	parsed map[string]schemeless
}

// Add puts cfg's credentials in the keyring, each recorded as coming from
// source. An entry whose key does not parse is passed over, as the kubelet
// passes it over. An entry whose auth field does not decode is passed over
// too and returned as an error naming its key (never its value): the
// kubelet refuses the whole Secret then, and with it every pull of the
// pod, so a caller judging a pod must treat the error as that.
func (k *Keyring) Add(source string, cfg Config) error {
	if k.creds == nil {
		k.creds, k.parsed = map[string][]Auth{}, map[string]schemeless{}
	}
	var bad []string
	// Keys in a stable order, so that two credentials under one key are
	// tried in the order the kubelet's would be (Go's map order is not).
	keys := make([]string, 0, len(cfg))
	for key := range cfg {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, raw := range keys {
		user, pass, err := cfg[raw].credentials()
		if err != nil {
			bad = append(bad, fmt.Sprintf("entry %q: %v", raw, err))
			continue
		}
		key, ok := indexKey(raw)
		if !ok {
			continue
		}
		k.creds[key] = append(k.creds[key], Auth{Username: user, Password: pass, Source: source})
		if !slices.Contains(k.index, key) {
			k.index = append(k.index, key)
			k.parsed[key] = parseSchemeless(key)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(k.index)))
	if len(bad) > 0 {
		return fmt.Errorf("%s: %s", source, strings.Join(bad, "; "))
	}
	return nil
}

// indexKey is the kubelet's key for a docker config entry: its host, and
// its path when it has one other than "/", "/v1/" or "/v2/" (which docker
// takes for the host alone); the scheme dropped.
func indexKey(raw string) (string, bool) {
	repository := raw
	if !strings.HasPrefix(repository, "https://") && !strings.HasPrefix(repository, "http://") {
		repository = "https://" + repository
	}
	parsed, err := url.Parse(repository)
	if err != nil {
		return "", false
	}
	path := parsed.Path
	if strings.HasPrefix(path, "/v2/") || strings.HasPrefix(path, "/v1/") {
		path = path[3:]
	}
	if path != "" && path != "/" {
		return parsed.Host + path, true
	}
	return parsed.Host, true
}

// dockerHub is the key under which docker configs keep Docker Hub's
// credentials ("https://index.docker.io/v1/").
const dockerHub = "index.docker.io"

// Lookup returns the credentials the kubelet would try, in its order, to
// pull repo: the image's name as the kubelet normalizes it, without tag or
// digest ("docker.io/library/nginx", "registry.corp:5000/team/app"). Every
// key that matches (most specific first), else Docker Hub's credentials
// for an image of Docker Hub.
func (k *Keyring) Lookup(repo string) []Auth {
	if k == nil {
		return nil
	}
	var out []Auth
	target := parseSchemeless(repo)
	for _, key := range k.index {
		if k.parsed[key].matches(target) {
			out = append(out, k.creds[key]...)
		}
	}
	if len(out) > 0 {
		return out
	}
	if onDockerHub(repo) {
		return append(out, k.creds[dockerHub]...)
	}
	return nil
}

// Len is how many credentials the keyring holds.
func (k *Keyring) Len() int {
	if k == nil {
		return 0
	}
	n := 0
	for _, c := range k.creds {
		n += len(c)
	}
	return n
}

// onDockerHub reports whether the kubelet takes repo for Docker Hub's.
func onDockerHub(repo string) bool {
	first, _, found := strings.Cut(repo, "/")
	switch {
	case first == "":
		return false
	case !found:
		return true
	case first == "docker.io" || first == dockerHub:
		return true
	}
	return !strings.ContainsAny(first, ".:")
}

// urlsMatch reports whether the image name target matches the key glob as
// the kubelet matches them: the same port, the same number of host labels
// each matching as a path.Match pattern ("*.corp" matches "a.corp", not
// "a.b.corp"), and the key's path a prefix of the image's.
func urlsMatch(glob, target string) bool {
	return parseSchemeless(glob).matches(parseSchemeless(target))
}

// schemeless is a key or an image name as the kubelet parses it to match
// them: "https://" put before it, the host split into labels and port.
type schemeless struct {
	ok         bool
	labels     []string
	port, path string
}

func parseSchemeless(s string) schemeless {
	u, err := url.Parse("https://" + s)
	if err != nil {
		return schemeless{}
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, port = u.Host, ""
	}
	return schemeless{ok: true, labels: strings.Split(host, "."), port: port, path: u.Path}
}

// matches reports whether target matches g, g being the glob.
func (g schemeless) matches(target schemeless) bool {
	if !g.ok || !target.ok || g.port != target.port || len(g.labels) != len(target.labels) || !strings.HasPrefix(target.path, g.path) {
		return false
	}
	for i, part := range g.labels {
		if ok, err := filepath.Match(part, target.labels[i]); err != nil || !ok {
			return false
		}
	}
	return true
}

// MatchImage reports whether an image's repository, as the kubelet names
// it, matches pattern as the kubelet matches a credential provider's
// matchImages and a docker config's keys: the same port, as many host
// labels each matching as a glob, and the pattern's path a prefix.
func MatchImage(pattern, repo string) bool { return urlsMatch(pattern, repo) }

// ValidPattern reports whether the kubelet accepts pattern in matchImages.
func ValidPattern(pattern string) bool {
	_, err := url.Parse("https://" + pattern)
	return err == nil
}
