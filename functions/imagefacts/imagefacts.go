// Package imagefacts holds what admitfn learns about an image from its
// registry — the facts the resolver produces and the policy engine reads —
// and the registry settings that shape how it is learnt. It is small on
// purpose: the resolver needs it, not the policy's checks and their
// signature verifiers.
package imagefacts

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/admitfn/admitfn/functions/imageref"
)

// Level is how much a rule needs to know about an image beyond its name.
type Level int

const (
	// LevelName needs only the reference as written.
	LevelName Level = iota
	// LevelDigest needs the registry to resolve the reference to a digest.
	LevelDigest
	// LevelConfig needs the manifest and the image config.
	LevelConfig
	// LevelSignatures needs, besides, the signatures stored beside the
	// image: cosign's sha256-<hex>.sig tag and sigstore bundles attached as
	// referrers.
	LevelSignatures
	// LevelAttestations needs the attestations too (cosign's
	// sha256-<hex>.att tag). It is above LevelSignatures only so that one
	// cached answer serves both; a signatures rule never reads .att.
	LevelAttestations
)

// Facts is what the registry said about an image. The zero value means
// nothing was asked.
type Facts struct {
	// Level says how much was fetched.
	Level Level
	// Digest is the digest the reference resolves to: the index digest for
	// multi-arch images, which is what the kubelet pulls.
	Digest string
	// NotFound means the registry answered that the tag or digest does not
	// exist.
	NotFound bool
	// Err is set when the registry could not answer: decided by the
	// rule's onRegistryError.
	Err error
	// Malformed is set when the registry answered with an image admitfn
	// will not judge: a manifest, index or config that does not parse, is
	// of another kind, or is larger or has more parts than admitfn reads.
	// Anyone who may push to the repository can cause it, so it is a
	// verdict (the image is refused), never an error a rule may let pass.
	Malformed error
	// Unauthorized means the registry refused admitfn (401 or 403): an
	// answer about admitfn's access, not about the image, decided by the
	// rule's onRegistryUnauthorized rather than onRegistryError.
	Unauthorized bool
	// Stale means the facts come from the cache past their TTL because the
	// registry failed.
	Stale bool
	// Platforms the image provides.
	Platforms []Platform
	// Configs of every image a node of the cluster could pick
	// (Platform.MayRun against spec.registry.platforms): the one config of
	// a single image; for an index, each child a node platform may run,
	// children that name no platform included (judged by their config).
	Configs []ImageConfig
	// Signatures stored for Digest in cosign's .sig tag, newest first
	// (fetched at LevelSignatures; none when the image has no such tag).
	Signatures []Signature
	// Attestations stored for Digest in cosign's .att tag: DSSE envelopes,
	// as read, newest first (fetched at LevelAttestations).
	Attestations [][]byte
	// Bundles are the sigstore bundles attached to Digest as referrers,
	// whole, newest first (fetched at LevelSignatures): signatures and
	// attestations alike, told apart by their statement's predicate type.
	Bundles [][]byte
	// NotationSignatures are the Notary Project signatures attached to
	// Digest as referrers, newest first (fetched at LevelSignatures).
	NotationSignatures []NotationSignature
	// ManifestMediaType and ManifestSize describe Digest's manifest
	// (fetched at LevelSignatures): a Notation signature names the
	// manifest by its media type, digest and size.
	ManifestMediaType string
	ManifestSize      int64
	// Skipped says what was passed over while reading signatures and
	// attestations: malformed or oversized artifacts, and those past the
	// number or bytes admitfn reads. A reason for a missing signature
	// names them.
	Skipped []string
}

// Signature is one signature cosign stored for an image: the signed
// payload (a simple-signing JSON document naming the image digest) and the
// signature over it, with what a keyless signature carries beside them in
// the layer's annotations (cosign's classic keyless format).
type Signature struct {
	Payload, Signature []byte
	// Certificate is the signer's PEM certificate
	// (dev.sigstore.cosign/certificate), nil for a key's signature.
	Certificate []byte
	// LogEntry is the transparency-log entry and its signed entry
	// timestamp (dev.sigstore.cosign/bundle, JSON), nil when none.
	LogEntry []byte
	// Timestamp is an RFC 3161 timestamp over the signature
	// (dev.sigstore.cosign/rfc3161timestamp, JSON), nil when none.
	Timestamp []byte
}

// NotationSignature is one Notary Project signature: the envelope (the
// referrer's one layer) and its media type (JWS or COSE).
type NotationSignature struct {
	MediaType string
	Envelope  []byte
}

// ImageConfig holds the facts read from one image config.
type ImageConfig struct {
	Platform Platform
	User     string
	Created  time.Time
	Labels   map[string]string
}

// Registry is how registries are asked: the checked form of a policy's
// spec.registry.
type Registry struct {
	Insecure         []imageref.HostPattern
	Internal         []imageref.HostPattern
	Timeout          time.Duration
	CacheTTL         time.Duration
	NegativeCacheTTL time.Duration
	StaleWindow      time.Duration
	CacheSize        int
	Platforms        []Platform
}

// IsInsecure reports whether the policy lets host be reached over plain HTTP.
func (r Registry) IsInsecure(host string) bool {
	for _, p := range r.Insecure {
		if p.Match(host) {
			return true
		}
	}
	return false
}

// IsInternal reports whether the policy lets host be reached at an
// inward address (loopback, link-local, private): it is listed under
// internal or insecure.
func (r Registry) IsInternal(host string) bool {
	for _, p := range r.Internal {
		if p.Match(host) {
			return true
		}
	}
	return r.IsInsecure(host)
}

// Platform is os/arch[/variant].
type Platform struct{ OS, Arch, Variant string }

func (p Platform) String() string {
	s := p.OS + "/" + p.Arch
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Covers reports whether q satisfies p: same OS and architecture, and the
// same variant when p names one. It is what a platforms rule asks of an
// image ("is it built for linux/arm64?").
func (p Platform) Covers(q Platform) bool {
	return p.OS == q.OS && p.Arch == q.Arch && (p.Variant == "" || p.Variant == q.Variant)
}

// ParsePlatform reads "os/arch[/variant]".
func ParsePlatform(s string) (Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return Platform{}, fmt.Errorf("%q is not os/arch[/variant]", s)
	}
	p := Platform{OS: parts[0], Arch: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// Normalize spells a platform as containerd's platforms.Normalize does,
// so that aliases compare equal: x86_64 is amd64, aarch64 is arm64, arm64
// v8 is arm64 with no variant, a bare arm is arm/v7, armhf is arm/v7,
// armel arm/v6, i386 is 386; OS and architecture in lower case.
func (p Platform) Normalize() Platform {
	p.OS = strings.ToLower(p.OS)
	if p.OS == "macos" {
		p.OS = "darwin"
	}
	arch, variant := strings.ToLower(p.Arch), strings.ToLower(p.Variant)
	switch arch {
	case "i386":
		arch, variant = "386", ""
	case "x86_64", "x86-64", "amd64":
		arch = "amd64"
		if variant == "v1" {
			variant = ""
		}
	case "aarch64", "arm64":
		arch = "arm64"
		switch variant {
		case "8", "v8", "v8.0":
			variant = ""
		case "9", "9.0", "v9.0":
			variant = "v9"
		}
	case "armhf":
		arch, variant = "arm", "v7"
	case "armel":
		arch, variant = "arm", "v6"
	case "arm":
		switch variant {
		case "", "7":
			variant = "v7"
		case "5", "6", "8":
			variant = "v" + variant
		}
	}
	p.Arch, p.Variant = arch, variant
	return p
}

// MayRun reports whether a node of platform p (one of the cluster's node
// platforms, spec.registry.platforms) may pick an image built for child
// when it pulls a multi-platform index. It answers as containerd's
// default matcher (platforms.Only) does, widened so that it never answers
// no where some node of p could answer yes:
//
//   - both are normalized first (Normalize);
//   - the OS must be the same;
//   - an amd64 node runs amd64 of its variant and every lower one, and
//     386;
//   - an arm64 node runs arm64 of its variant and every lower one, and
//     32-bit arm up to v8;
//   - an arm node runs arm of its variant and every lower one down to v5;
//   - any other architecture runs only itself, of the same variant.
//
// Where p names no variant, a node of any variant may be meant (containerd
// detects the CPU's), so every variant of the architecture counts: a rule
// can only be stricter for it. Which of the matching children a node then
// prefers depends on the node, and a child without a platform in the
// index is matched by its config's platform; admitfn judges every child
// some node could pick.
func (p Platform) MayRun(child Platform) bool {
	node, c := p.Normalize(), child.Normalize()
	if node.OS != c.OS {
		return false
	}
	if p.Variant == "" {
		// Any variant of the node's architecture: the highest it could be.
		switch node.Arch {
		case "amd64", "arm64":
			node.Variant = "v99"
		case "arm":
			node.Variant = "v8"
		}
	}
	switch node.Arch {
	case "amd64":
		return c.Arch == "386" || c.Arch == "amd64" && variantAtMost(c.Variant, "v1", or(node.Variant, "v1"))
	case "arm64":
		return c.Arch == "arm64" && variantAtMost(c.Variant, "v8", or(node.Variant, "v8")) ||
			c.Arch == "arm" && variantAtMost(c.Variant, "v7", "v8")
	case "arm":
		return c.Arch == "arm" && variantAtMost(c.Variant, "v7", node.Variant)
	}
	return c.Arch == node.Arch && (node.Variant == c.Variant || p.Variant == "")
}

// or is v, or def when v is empty.
func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// variantAtMost reports whether variant v ("" meaning def) is at most max,
// comparing "vN" and "vN.M" by number. A variant that is not a version is
// taken as within reach: a node might run it, so it is judged.
func variantAtMost(v, def, max string) bool {
	if v == "" {
		v = def
	}
	a, aok := variantNumber(v)
	b, bok := variantNumber(max)
	if !aok || !bok {
		return true
	}
	return a <= b
}

// variantNumber reads "v8" as 8.0 and "v8.2" as 8.2.
func variantNumber(v string) (float64, bool) {
	if !strings.HasPrefix(v, "v") {
		return 0, false
	}
	major, minor, _ := strings.Cut(v[1:], ".")
	n, err := strconv.Atoi(major)
	if err != nil {
		return 0, false
	}
	f := float64(n)
	if minor != "" {
		m, err := strconv.Atoi(minor)
		if err != nil || m > 9 {
			return 0, false
		}
		f += float64(m) / 10
	}
	return f, true
}
