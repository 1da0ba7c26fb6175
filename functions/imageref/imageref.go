// Package imageref normalizes container image references and matches them
// against registry and repository patterns.
//
// Matching is done on normalized references, segment by segment, never on raw
// string prefixes: "nginx" and "docker.io/library/nginx" are the same image,
// and "registry.corp.evil.io/app" is not in "registry.corp".
package imageref

import (
	"fmt"
	"net"
	"path"
	"strings"
	"sync"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
)

// DockerHub is the registry that references without a registry resolve to.
const DockerHub = name.DefaultRegistry

// Ref is a normalized image reference.
type Ref struct {
	// Original is the reference as written in the pod spec.
	Original string
	// Registry is the registry host (and port), e.g. "index.docker.io".
	Registry string
	// Repository is the path inside the registry, e.g. "library/nginx".
	Repository string
	// Tag is the tag as written; empty when the reference names none.
	Tag string
	// Digest is the digest as written ("sha256:..."); empty when none.
	Digest string
}

// Parse normalizes an image reference the way the container runtime reads it.
func Parse(s string) (Ref, error) {
	if s == "" {
		return Ref{}, fmt.Errorf("image reference is empty")
	}
	if strings.TrimSpace(s) != s || strings.ContainsAny(s, " \t\r\n") {
		return Ref{}, fmt.Errorf("image reference %q contains white space", s)
	}
	if base := strings.SplitN(s, "@", 2)[0]; strings.Contains(s, "//") || strings.HasPrefix(s, "/") || strings.HasSuffix(base, "/") {
		return Ref{}, fmt.Errorf("image reference %q has an empty path segment", s)
	}
	parsed, err := name.ParseReference(s)
	if err != nil {
		return Ref{}, fmt.Errorf("image reference %q is invalid: %w", s, err)
	}
	r := Ref{
		Original:   s,
		Registry:   CanonicalHost(parsed.Context().RegistryStr()),
		Repository: parsed.Context().RepositoryStr(),
	}
	base := s
	if d, ok := parsed.(name.Digest); ok {
		r.Digest = d.DigestStr()
		base = s[:strings.LastIndex(s, "@")]
	}
	// A colon after the last slash separates the tag; a colon before it is a
	// registry port. This is how name.NewTag tells them apart too, but it
	// hides whether the tag was written or defaulted to "latest".
	last := base[strings.LastIndex(base, "/")+1:]
	if i := strings.LastIndex(last, ":"); i >= 0 {
		r.Tag = last[i+1:]
	}
	// The runtime pulls the normalized name: "library/" can push a Docker
	// Hub name past the 255 characters a repository may have.
	if len(r.Repository) > 255 {
		return Ref{}, fmt.Errorf("image reference %q is invalid: its repository %q is longer than 255 characters", s, r.Repository)
	}
	if err := kubeletAgrees(s, r); err != nil {
		return Ref{}, err
	}
	// Another spelling of Docker Hub's host (registry-1.docker.io,
	// DOCKER.IO) with a one-segment repository: the runtime does not add
	// "library/" there, so it names no image that "docker.io/library/<name>"
	// names, and its canonical form would read as one. Refused rather than
	// judged as something else.
	if r.Registry == DockerHub && !strings.Contains(r.Repository, "/") {
		return Ref{}, fmt.Errorf("image reference %q names a Docker Hub repository without a namespace on another spelling of its host, which the runtime does not resolve to library/: write docker.io/library/%s", s, r.Repository)
	}
	return r, nil
}

// kubeletAgrees parses s as the kubelet does (the distribution reference
// grammar, normalized) and refuses a reference it cannot parse or reads
// as another image: what is judged must be what the kubelet pulls.
func kubeletAgrees(s string, r Ref) error {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return fmt.Errorf("image reference %q is one the kubelet cannot parse: %v", s, err)
	}
	tag, digest := "", ""
	if t, ok := named.(reference.Tagged); ok {
		tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		digest = d.Digest().String()
	}
	if CanonicalHost(reference.Domain(named)) != r.Registry || reference.Path(named) != r.Repository || tag != r.Tag || digest != r.Digest {
		return fmt.Errorf("image reference %q is read differently by the kubelet (%s)", s, named.String())
	}
	return nil
}

// CanonicalHost is the one spelling of a registry host that matching
// uses, so that other spellings of the same registry cannot slip past a
// pattern: lower case (host names are case-insensitive), no trailing dot,
// no default HTTPS port, and Docker Hub's aliases (docker.io, the name the
// runtime uses; registry-1.docker.io, where it connects;
// registry.hub.docker.com) as index.docker.io.
func CanonicalHost(h string) string {
	h = strings.ToLower(h)
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		// No port: a bracketed IPv6 address loses its brackets here, as
		// SplitHostPort would have taken them off, so that "[::1]" and
		// "[::1]:443" are one host (not "[[::1]]" and "[::1]").
		host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), ""
	}
	host = strings.TrimSuffix(host, ".")
	switch host {
	case "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		if port == "" || port == "443" {
			return DockerHub
		}
	}
	if port == "" || port == "443" {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, port)
}

// Cache remembers parsed references. A cluster admits the same images over
// and over, and parsing one costs more than the rest of a warm review's
// policy work. It keeps at most its size and starts over when full, so
// requests naming ever new images cannot grow it.
type Cache struct {
	mu   sync.RWMutex
	refs map[string]Ref
	size int
}

// NewCache returns a Cache holding at most size references.
func NewCache(size int) *Cache {
	return &Cache{refs: make(map[string]Ref), size: size}
}

// Parse is Parse, remembering what parses. Errors are not remembered: they
// are rare, and their messages must stay as Parse words them.
func (c *Cache) Parse(s string) (Ref, error) {
	c.mu.RLock()
	r, ok := c.refs[s]
	c.mu.RUnlock()
	if ok {
		return r, nil
	}
	r, err := Parse(s)
	if err != nil {
		return Ref{}, err
	}
	c.mu.Lock()
	if len(c.refs) >= c.size {
		c.refs = make(map[string]Ref)
	}
	c.refs[s] = r
	c.mu.Unlock()
	return r, nil
}

// Repo is the fully qualified repository, e.g. "index.docker.io/library/nginx".
func (r Ref) Repo() string { return r.Registry + "/" + r.Repository }

// String is the fully qualified reference: repository, tag if written, digest
// if written.
func (r Ref) String() string {
	s := r.Repo()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// Reference is what a registry client fetches: the digest when one is
// written (the runtime ignores the tag then), else the tag, "latest" when
// none is written.
func (r Ref) Reference(opts ...name.Option) (name.Reference, error) {
	if r.Digest != "" {
		return name.NewDigest(r.Repo()+"@"+r.Digest, opts...)
	}
	tag := r.Tag
	if tag == "" {
		tag = "latest"
	}
	return name.NewTag(r.Repo()+":"+tag, opts...)
}

// HostPattern matches registry hosts. "*" matches any run of characters, so
// "*.corp.example" matches every host under corp.example; a port is part of
// the host ("localhost:5000").
type HostPattern struct{ pattern string }

// ParseHostPattern checks and normalizes a registry pattern. "docker.io" is
// rewritten to "index.docker.io", as references are.
func ParseHostPattern(p string) (HostPattern, error) {
	if p == "" {
		return HostPattern{}, fmt.Errorf("registry pattern is empty")
	}
	if strings.Contains(p, "/") {
		return HostPattern{}, fmt.Errorf("registry pattern %q contains a '/': registries are hosts; put paths in a repositories rule", p)
	}
	if strings.ContainsAny(p, "[]") && !ipv6Literal(p) {
		return HostPattern{}, fmt.Errorf("registry pattern %q is malformed: brackets only enclose an IPv6 address, as in [::1]:5000", p)
	}
	p = normalizeHost(p)
	if _, err := path.Match(p, ""); err != nil {
		return HostPattern{}, fmt.Errorf("registry pattern %q is malformed: %w", p, err)
	}
	return HostPattern{pattern: p}, nil
}

// Match reports whether host (a normalized registry) matches the pattern.
func (p HostPattern) Match(host string) bool {
	ok, _ := path.Match(p.pattern, strings.ToLower(host))
	return ok
}

func (p HostPattern) String() string { return p.pattern }

// RepoPattern matches fully qualified repositories path segment by segment:
// "*" matches within one segment, "**" matches any number of whole segments;
// a first segment of "*" or "**" stands for any registry.
// Patterns are normalized like references: "nginx" is
// "index.docker.io/library/nginx" and "registry.corp/**" matches every
// repository of registry.corp and of no other host.
type RepoPattern struct {
	pattern string
	segs    []string
}

// ParseRepoPattern checks and normalizes a repository pattern.
func ParseRepoPattern(p string) (RepoPattern, error) {
	if p == "" {
		return RepoPattern{}, fmt.Errorf("repository pattern is empty")
	}
	if strings.ContainsAny(p, "@ \t") {
		return RepoPattern{}, fmt.Errorf("repository pattern %q must name repositories, without tag or digest", p)
	}
	segs := strings.Split(p, "/")
	for _, s := range segs {
		if s == "" {
			return RepoPattern{}, fmt.Errorf("repository pattern %q has an empty path segment", p)
		}
		if _, err := path.Match(s, ""); err != nil {
			return RepoPattern{}, fmt.Errorf("repository pattern %q is malformed: %w", p, err)
		}
	}
	var host string
	switch {
	case segs[0] == "**":
		// Any host, any path after it.
		return RepoPattern{pattern: p, segs: segs}, nil
	case len(segs) > 1 && (looksLikeHost(segs[0]) || segs[0] == "*"):
		host, segs = normalizeHost(segs[0]), segs[1:]
	default:
		if len(segs) == 1 && hasTag(segs[0]) {
			return RepoPattern{}, fmt.Errorf("repository pattern %q must name repositories, without tag or digest", p)
		}
		if len(segs) == 1 && looksLikeHost(segs[0]) && segs[0] != "localhost" {
			return RepoPattern{}, fmt.Errorf("repository pattern %q names a host, not a repository: write %q for all of its repositories, or use a registries rule", p, p+"/**")
		}
		host = DockerHub
	}
	if host == DockerHub && len(segs) == 1 && segs[0] != "**" {
		segs = []string{"library", segs[0]}
	}
	for _, s := range segs {
		if strings.Contains(s, ":") {
			return RepoPattern{}, fmt.Errorf("repository pattern %q must name repositories, without tag or digest", p)
		}
	}
	all := append([]string{host}, segs...)
	return RepoPattern{pattern: strings.Join(all, "/"), segs: all}, nil
}

// Match reports whether the reference's repository matches the pattern.
func (p RepoPattern) Match(r Ref) bool {
	segs := append([]string{strings.ToLower(r.Registry)}, strings.Split(r.Repository, "/")...)
	return matchSegments(p.segs, segs)
}

func (p RepoPattern) String() string { return p.pattern }

func matchSegments(pat, segs []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			rest := pat[1:]
			for i := 0; i <= len(segs); i++ {
				if matchSegments(rest, segs[i:]) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], segs[0]); !ok {
			return false
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}

// looksLikeHost applies the container runtime's rule for the first path
// segment: it is a registry when it has a dot or a port, or is localhost.
func looksLikeHost(s string) bool {
	return strings.ContainsAny(s, ".:") || s == "localhost"
}

// hasTag tells "nginx:1.0" (a tag) from "localhost:5000" (a port).
func hasTag(seg string) bool {
	i := strings.LastIndex(seg, ":")
	if i < 0 {
		return false
	}
	for _, c := range seg[i+1:] {
		if c < '0' || c > '9' {
			return true
		}
	}
	return false
}

// ipv6Literal reports whether h is "[address]" or "[address]:port", the
// address made of hex digits, colons, dots and "*".
func ipv6Literal(h string) bool {
	end := strings.Index(h, "]")
	if !strings.HasPrefix(h, "[") || end < 2 || strings.Count(h, "[") != 1 || strings.Count(h, "]") != 1 {
		return false
	}
	for _, c := range strings.ToLower(h[1:end]) {
		if !strings.ContainsRune("0123456789abcdef:.*", c) {
			return false
		}
	}
	rest := h[end+1:]
	return rest == "" || (strings.HasPrefix(rest, ":") && len(rest) > 1 && strings.Trim(rest[1:], "0123456789*") == "")
}

// normalizeHost is a host pattern in canonical form, with IPv6 brackets
// escaped so that path.Match reads them as themselves, not as a class.
func normalizeHost(h string) string {
	h = CanonicalHost(h)
	return strings.NewReplacer("[", `\[`, "]", `\]`).Replace(h)
}
