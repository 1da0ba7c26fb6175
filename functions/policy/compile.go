package policy

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/workload"
)

// Option changes how a policy is compiled.
type Option func(*options)

type options struct {
	readFile func(path string) ([]byte, error)
}

// WithReadFile reads the files a policy names (keyFile, trustedRootFile)
// through read instead of the file system: a watcher passes what it read,
// a test passes fixtures.
func WithReadFile(read func(path string) ([]byte, error)) Option {
	return func(o *options) { o.readFile = read }
}

// Parse reads a policy document strictly: unknown or duplicate fields and
// bad values are errors that name the field.
func Parse(data []byte, opts ...Option) (*Policy, error) {
	doc, err := ReadDocument(data)
	if err != nil {
		return nil, err
	}
	return Compile(doc, opts...)
}

// ReadDocument reads a policy document strictly, as Parse does, without
// compiling it.
func ReadDocument(data []byte) (Document, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return Document{}, fmt.Errorf("policy is not valid YAML: %w", err)
	}
	var doc Document
	strict, err := sigsjson.UnmarshalStrict(js, &doc, sigsjson.DisallowUnknownFields, sigsjson.DisallowDuplicateFields)
	if err != nil {
		return Document{}, fmt.Errorf("policy: %w", err)
	}
	if len(strict) > 0 {
		return Document{}, fmt.Errorf("policy: %w", errors.Join(strict...))
	}
	return doc, nil
}

// Compile checks a document and prepares it for the engine.
func Compile(doc Document, opts ...Option) (*Policy, error) {
	o := options{readFile: os.ReadFile}
	for _, opt := range opts {
		opt(&o)
	}
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	files := readNamedFiles(&doc, o.readFile, fail)
	if doc.APIVersion != APIVersion {
		fail("apiVersion", "%q is not supported; use %q", doc.APIVersion, APIVersion)
	}
	if doc.Kind != Kind {
		fail("kind", "%q is not supported; use %q", doc.Kind, Kind)
	}
	p := &Policy{Name: "unnamed", Files: files}
	if doc.Metadata != nil && doc.Metadata.Name != "" {
		p.Name = doc.Metadata.Name
	}
	spec := doc.Spec
	p.ExemptNamespaces = checkGlobs("spec.exemptNamespaces", spec.ExemptNamespaces, fail)

	if bg := spec.BreakGlass; bg != nil {
		if !strings.Contains(bg.Annotation, ".image-policy.k8s.io/") {
			fail("spec.breakGlass.annotation", "%q must contain \".image-policy.k8s.io/\": kube-apiserver forwards no other pod annotations to the backend", bg.Annotation)
		}
		if len(bg.Namespaces) == 0 {
			fail("spec.breakGlass.namespaces", "is empty: list the namespaces (globs) where break-glass is honoured")
		}
		checkGlobs("spec.breakGlass.namespaces", bg.Namespaces, fail)
		p.BreakGlass = &BreakGlass{Annotation: bg.Annotation, Namespaces: append([]string(nil), bg.Namespaces...)}
	}

	reg := spec.Registry
	p.Registry = Registry{
		Timeout:          duration("spec.registry.timeout", reg.Timeout, 10*time.Second, fail),
		CacheTTL:         duration("spec.registry.cacheTTL", reg.CacheTTL, 5*time.Minute, fail),
		NegativeCacheTTL: duration("spec.registry.negativeCacheTTL", reg.NegativeCacheTTL, 30*time.Second, fail),
		StaleWindow:      duration("spec.registry.staleWindow", reg.StaleWindow, time.Hour, fail),
		CacheSize:        4096,
	}
	if p.Registry.Timeout == 0 {
		fail("spec.registry.timeout", "must be more than 0s")
	}
	if reg.CacheSize != nil {
		if *reg.CacheSize < 1 {
			fail("spec.registry.cacheSize", "%d must be at least 1", *reg.CacheSize)
		}
		p.Registry.CacheSize = *reg.CacheSize
	}
	for i, h := range reg.Insecure {
		hp, err := imageref.ParseHostPattern(h)
		if err != nil {
			fail(fmt.Sprintf("spec.registry.insecure[%d]", i), "%v", err)
		}
		p.Registry.Insecure = append(p.Registry.Insecure, hp)
	}
	for i, h := range reg.Internal {
		hp, err := imageref.ParseHostPattern(h)
		if err != nil {
			fail(fmt.Sprintf("spec.registry.internal[%d]", i), "%v", err)
		}
		p.Registry.Internal = append(p.Registry.Internal, hp)
	}
	platforms := reg.Platforms
	if len(platforms) == 0 {
		platforms = []string{"linux/amd64", "linux/arm64"}
	}
	p.Registry.Platforms = checkPlatforms("spec.registry.platforms", platforms, fail)
	if ps := reg.PullSecrets; ps != nil {
		p.PullSecrets = PullSecretScope{
			Namespaces:       checkGlobs("spec.registry.pullSecrets.namespaces", ps.Namespaces, fail),
			ExemptNamespaces: checkGlobs("spec.registry.pullSecrets.exemptNamespaces", ps.ExemptNamespaces, fail),
		}
	}

	if spec.Mutation != nil {
		m := *spec.Mutation
		if len(m.Namespaces) == 0 {
			fail("spec.mutation.namespaces", "is empty: mutation is opt-in; list the namespaces (globs) to mutate")
		}
		checkGlobs("spec.mutation.namespaces", m.Namespaces, fail)
		switch m.PinForm {
		case "":
			m.PinForm = PinTagAndDigest
		case PinTagAndDigest, PinDigest:
		default:
			fail("spec.mutation.pinForm", "%q is not one of tagAndDigest, digest", m.PinForm)
		}
		if !m.PinDigests && !m.AlwaysPullImages {
			fail("spec.mutation", "changes nothing: set pinDigests or alwaysPullImages")
		}
		m.Namespaces = append([]string(nil), m.Namespaces...)
		p.Mutation = &m
	}

	for i, w := range spec.Workloads {
		field := fmt.Sprintf("spec.workloads[%d]", i)
		if w.Kind == "" {
			fail(field+".kind", "is empty")
			continue
		}
		key := workload.Key(w.APIGroup, w.Kind)
		if workload.HoldsPods(p.Workloads, key) {
			fail(field, "%s is already known (built in or declared before)", key)
			continue
		}
		var path []string
		switch tp := strings.TrimSpace(w.PodTemplate); tp {
		case "":
			fail(field+".podTemplate", `is empty: give the dotted path of the pod template, e.g. spec.template, or "." for the object itself`)
			continue
		case ".":
		default:
			path = strings.Split(tp, ".")
			if slices.Contains(path, "") {
				fail(field+".podTemplate", "%q has an empty path segment", tp)
				continue
			}
		}
		if p.Workloads == nil {
			p.Workloads = workload.Kinds{}
		}
		p.Workloads[key] = path
	}

	if len(spec.Rules) == 0 {
		fail("spec.rules", "is empty: a policy needs at least one rule")
	}
	seen := map[string]bool{}
	for i, r := range spec.Rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		if r.Name == "" {
			fail(field+".name", "is required")
		} else if seen[r.Name] {
			fail(field+".name", "%q is used by an earlier rule", r.Name)
		}
		seen[r.Name] = true
		p.Rules = append(p.Rules, compileRule(field, r, fail))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

type failFunc func(field, format string, args ...any)

func compileRule(field string, r Rule, fail failFunc) CompiledRule {
	c := CompiledRule{
		Name:                   r.Name,
		Mode:                   r.Mode,
		OnRegistryError:        r.OnRegistryError,
		OnRegistryUnauthorized: r.OnRegistryUnauthorized,
		NodeRestriction:        r.NodeRestriction,
	}
	switch c.Mode {
	case "":
		c.Mode = Enforce
	case Enforce, Warn, Audit:
	default:
		fail(field+".mode", "%q is not one of enforce, warn, audit", r.Mode)
	}
	c.OnRegistryError = onError(field+".onRegistryError", r.OnRegistryError, fail)
	c.OnRegistryUnauthorized = onError(field+".onRegistryUnauthorized", r.OnRegistryUnauthorized, fail)
	c.Namespaces = checkGlobs(field+".namespaces", r.Namespaces, fail)
	c.ExemptNamespaces = checkGlobs(field+".exemptNamespaces", r.ExemptNamespaces, fail)
	c.Images = repoPatterns(field+".images", r.Images, fail)
	c.ExcludeImages = repoPatterns(field+".excludeImages", r.ExcludeImages, fail)

	for _, compile := range imageCheckCompilers() {
		if k := compile(field, r, fail); k != nil {
			c.checks = append(c.checks, k)
		}
	}
	checks := len(c.checks)
	if st := r.ServiceTypes; st != nil {
		checks++
		if len(st.Deny) == 0 {
			fail(field+".serviceTypes.deny", "is empty: list the Service types to refuse")
		}
		for i, ty := range st.Deny {
			switch ty {
			case "ClusterIP", "NodePort", "LoadBalancer", "ExternalName":
			default:
				fail(fmt.Sprintf("%s.serviceTypes.deny[%d]", field, i), "%q is not one of ClusterIP, NodePort, LoadBalancer, ExternalName", ty)
			}
		}
		c.DenyServiceTypes = append([]string(nil), st.Deny...)
	}
	if r.NodeRestriction {
		checks++
	}
	if checks == 0 {
		fail(field, "rule %q checks nothing: set one of tags, registries, repositories, requireDigest, digests, resolvable, nonRoot, maxAge, requiredLabels, platforms, signatures, attestations, nodeRestriction, serviceTypes", r.Name)
	}
	return c
}

// onError reads a deny/allow choice; unset is deny.
func onError(field string, v OnError, fail failFunc) OnError {
	switch v {
	case "":
		return FailClosed
	case FailClosed, FailOpen:
	default:
		fail(field, "%q is not one of deny, allow", v)
	}
	return v
}

func checkGlobs(field string, globs []string, fail failFunc) []string {
	for i, g := range globs {
		if g == "" {
			fail(fmt.Sprintf("%s[%d]", field, i), "is empty")
			continue
		}
		if _, err := path.Match(g, ""); err != nil {
			fail(fmt.Sprintf("%s[%d]", field, i), "%q is not a valid glob: %v", g, err)
		}
	}
	return append([]string(nil), globs...)
}

func repoPatterns(field string, in []string, fail failFunc) []imageref.RepoPattern {
	var out []imageref.RepoPattern
	for i, s := range in {
		p, err := imageref.ParseRepoPattern(s)
		if err != nil {
			fail(fmt.Sprintf("%s[%d]", field, i), "%v", err)
			continue
		}
		out = append(out, p)
	}
	return out
}

func checkPlatforms(field string, in []string, fail failFunc) []Platform {
	var out []Platform
	for i, s := range in {
		p, err := ParsePlatform(s)
		if err != nil {
			fail(fmt.Sprintf("%s[%d]", field, i), "%v", err)
			continue
		}
		out = append(out, p)
	}
	return out
}

// duration reads Go durations ("90s", "12h") and whole days ("30d").
func duration(field, s string, def time.Duration, fail failFunc) time.Duration {
	if s == "" {
		return def
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err == nil && n >= 0 {
			return time.Duration(n) * 24 * time.Hour
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		fail(field, "%q is not a duration such as 30s, 12h or 30d", s)
		return def
	}
	return d
}

func validDigest(d string) bool {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	for _, c := range hex {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func matchGlob(glob, s string) (bool, error) { return path.Match(glob, s) }

func matchAnyGlob(globs []string, s string) bool {
	for _, g := range globs {
		if ok, _ := matchGlob(g, s); ok {
			return true
		}
	}
	return false
}

// readNamedFiles puts the content of every keyFile and trustedRootFile in
// place of the inline field, in a copy of the rules, and lists the files.
// Both the inline field and the file is an error, as is a file that cannot
// be read.
func readNamedFiles(doc *Document, read func(string) ([]byte, error), fail failFunc) []string {
	var files []string
	load := func(field, path string, inline *string, inlineName string) {
		if path == "" {
			return
		}
		if *inline != "" {
			fail(field, "give %s or its file, not both", inlineName)
			return
		}
		if !filepath.IsAbs(path) {
			fail(field, "%q is not an absolute path", path)
			return
		}
		b, err := read(path)
		if err != nil {
			fail(field, "%v", err)
			return
		}
		*inline = string(b)
		files = append(files, path)
	}
	authorities := func(field string, as []SignatureAuthority) []SignatureAuthority {
		out := append([]SignatureAuthority(nil), as...)
		for i := range out {
			f := fmt.Sprintf("%s.authorities[%d]", field, i)
			load(f+".keyFile", out[i].KeyFile, &out[i].Key, "key")
			if kl := out[i].Keyless; kl != nil {
				c := *kl
				load(f+".keyless.trustedRootFile", c.TrustedRootFile, &c.TrustedRoot, "trustedRoot")
				out[i].Keyless = &c
			}
			if n := out[i].Notation; n != nil {
				c := *n
				load(f+".notation.trustStoreFile", c.TrustStoreFile, &c.TrustStore, "trustStore")
				out[i].Notation = &c
			}
		}
		return out
	}
	rules := append([]Rule(nil), doc.Spec.Rules...)
	for i := range rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		if s := rules[i].Signatures; s != nil {
			c := *s
			c.Authorities = authorities(field+".signatures", c.Authorities)
			rules[i].Signatures = &c
		}
		if a := rules[i].Attestations; a != nil {
			c := *a
			c.Authorities = authorities(field+".attestations", c.Authorities)
			rules[i].Attestations = &c
		}
	}
	doc.Spec.Rules = rules
	return files
}
