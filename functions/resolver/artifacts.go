package resolver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/admitfn/admitfn/functions/imagefacts"
	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/readcap"
)

// Limits on the artifacts stored beside one image. Anyone who may push to
// the repository can add to them, so reaching a limit is never an error:
// admitfn reads the newest within the limits, passes over the malformed,
// and says in Facts.Skipped what it did not read. A valid signature among
// junk is still found as long as it is among the newest maxArtifacts.
// Every fetch counts against a limit, the failed ones too: the work of a
// lookup, not only what it keeps, is bounded (at most 2+2×maxArtifacts
// requests for the tags and 1+2×maxArtifacts for the referrers), so junk
// cannot run a lookup past the registry timeout and into
// onRegistryError.
const (
	// maxArtifacts bounds the layers of the .sig tag, those of the .att
	// tag and the referrers admitfn tries to read, each.
	maxArtifacts = 32
	// maxArtifactLayer bounds one signature payload, envelope or bundle.
	maxArtifactLayer = 64 << 10
	// maxBundleLayers bounds the layers read of one referrer artifact
	// (cosign writes one).
	maxBundleLayers = 1
)

// notationArtifactType is the artifact type of a Notary Project signature
// referrer; its one layer is a JWS (application/jose+json) or COSE
// (application/cose) envelope.
const notationArtifactType = "application/vnd.cncf.notary.signature"

// bundleMediaType prefixes the media type of a sigstore bundle.
const bundleMediaType = "application/vnd.dev.sigstore.bundle"

// cosignSignatureAnnotation holds a .sig layer's signature, base64.
const cosignSignatureAnnotation = "dev.cosignproject.cosign/signature"

// The annotations of a keyless .sig layer (cosign's classic format): the
// signer's certificate, the transparency-log entry with its signed entry
// timestamp, and an RFC 3161 timestamp. The certificate chain cosign
// stores too (dev.sigstore.cosign/chain) is not read: a certificate is
// chained to the trusted root's own authorities, as cosign does when it is
// given a trusted root.
const (
	certificateAnnotation = "dev.sigstore.cosign/certificate"
	logEntryAnnotation    = "dev.sigstore.cosign/bundle"
	timestampAnnotation   = "dev.sigstore.cosign/rfc3161timestamp"
	// maxKeylessAnnotation bounds each of them: a Fulcio certificate is
	// about 1 KiB, a log entry about 3.
	maxKeylessAnnotation = 16 << 10
)

// artifacts reads what is stored beside f.Digest for the level asked:
// cosign's .sig tag and the sigstore bundles attached as referrers for
// LevelSignatures, cosign's .att tag too for LevelAttestations. Only a
// registry that cannot be asked fails the lookup; what anyone may push
// there — junk, floods, oversized layers — is passed over and noted.
func (r *Resolver) artifacts(ctx context.Context, p *remote.Puller, ref imageref.Ref, level imagefacts.Level, nopts []name.Option, f *imagefacts.Facts) *imagefacts.Facts {
	a := artifactReader{r: r, p: p, ctx: ctx, repo: ref.Repo(), nopts: nopts}
	fail := func(what string, err error) *imagefacts.Facts {
		failed := r.failure(level, ref, fmt.Errorf("reading its %s: %w", what, err))
		return &failed
	}
	sigs, err := a.tagLayers(f.Digest, ".sig", func(l v1.Descriptor) bool { _, ok := l.Annotations[cosignSignatureAnnotation]; return ok })
	if err != nil {
		return fail(".sig artifact", err)
	}
	for _, l := range sigs {
		sig, err := base64.StdEncoding.DecodeString(l.annotations[cosignSignatureAnnotation])
		if err != nil {
			a.skip(".sig layer whose signature is not base64")
			continue
		}
		s := imagefacts.Signature{Payload: l.blob, Signature: sig}
		if !keylessAnnotations(l.annotations, &s) {
			a.skip(".sig layer with an annotation larger than " + readcap.Size(maxKeylessAnnotation))
			continue
		}
		f.Signatures = append(f.Signatures, s)
	}
	if level >= imagefacts.LevelAttestations {
		atts, err := a.tagLayers(f.Digest, ".att", func(v1.Descriptor) bool { return true })
		if err != nil {
			return fail(".att artifact", err)
		}
		for _, l := range atts {
			f.Attestations = append(f.Attestations, l.blob)
		}
	}
	if err := a.referrers(f.Digest, f); err != nil {
		return fail("referrers", err)
	}
	f.Skipped = a.skipped()
	return nil
}

// keylessAnnotations copies into s what a keyless .sig layer carries
// beside its signature; false when one of them is too large to keep.
func keylessAnnotations(annotations map[string]string, s *imagefacts.Signature) bool {
	for key, dst := range map[string]*[]byte{certificateAnnotation: &s.Certificate, logEntryAnnotation: &s.LogEntry, timestampAnnotation: &s.Timestamp} {
		v, ok := annotations[key]
		switch {
		case !ok:
		case len(v) > maxKeylessAnnotation:
			return false
		default:
			*dst = []byte(v)
		}
	}
	return true
}

// artifactReader reads one lookup's artifacts and tallies what it passed
// over.
type artifactReader struct {
	r     *Resolver
	p     *remote.Puller
	ctx   context.Context
	repo  string
	nopts []name.Option
	// notes counts what was passed over, by what it was; order keeps the
	// first-seen order for the reason.
	notes map[string]int
	order []string
	// spent is set once the lookup's read budget ran out: nothing more
	// can be read.
	spent bool
}

func (a *artifactReader) skip(what string) { a.skipN(what, 1) }

func (a *artifactReader) skipN(what string, n int) {
	if a.notes == nil {
		a.notes = map[string]int{}
	}
	if _, seen := a.notes[what]; !seen {
		a.order = append(a.order, what)
	}
	a.notes[what] += n
}

func (a *artifactReader) skipped() []string {
	var out []string
	for _, what := range a.order {
		out = append(out, fmt.Sprintf("%d %s", a.notes[what], what))
	}
	if a.spent {
		out = append(out, "the rest past the "+readcap.Size(MaxLookupBytes)+" admitfn reads for one image")
	}
	return out
}

// passOver decides what an error while reading an artifact means: a
// registry that cannot be asked fails the lookup (returned); anything the
// pusher caused is noted as what and passed over (nil).
func (a *artifactReader) passOver(what string, err error) error {
	switch kind, _ := classify(err); {
	case readcap.IsExceeded(err):
		a.spent = true
	case kind == failMalformed:
		a.skip(what + " that cannot be read")
	case kind == failNotFound:
		a.skip(what + " the registry does not have")
	default:
		return err
	}
	return nil
}

// storedLayer is one layer of an artifact stored beside an image.
type storedLayer struct {
	mediaType   types.MediaType
	annotations map[string]string
	blob        []byte
}

// tagLayers reads the layers keep selects of the artifact cosign stores
// for digest under the tag sha256-<hex><suffix>, newest (last) first. No
// tag means none.
func (a *artifactReader) tagLayers(digest, suffix string, keep func(v1.Descriptor) bool) ([]storedLayer, error) {
	tag, err := name.NewTag(a.repo+":"+strings.Replace(digest, ":", "-", 1)+suffix, a.nopts...)
	if err != nil {
		return nil, err
	}
	what := suffix + " artifact"
	desc, err := a.p.Get(a.ctx, tag)
	if err != nil {
		if kind, _ := classify(err); kind == failNotFound {
			return nil, nil
		}
		return nil, a.passOver(what, err)
	}
	return a.layers(desc, what, keep, maxArtifacts)
}

// layers reads, newest (last) first, at most max of the layers keep
// selects from the image manifest desc, each at most maxArtifactLayer
// long.
func (a *artifactReader) layers(desc *remote.Descriptor, what string, keep func(v1.Descriptor) bool, max int) ([]storedLayer, error) {
	if a.spent {
		return nil, nil
	}
	if !desc.MediaType.IsImage() {
		a.skip(what + " that is not an image manifest")
		return nil, nil
	}
	img, err := desc.Image()
	if err != nil {
		return nil, a.passOver(what, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, a.passOver(what, err)
	}
	var out []storedLayer
	tried := 0
	for i, l := range slices.Backward(m.Layers) {
		if tried == max {
			a.skipN(what+" layers past the newest "+fmt.Sprint(max), i+1)
			break
		}
		switch {
		case !keep(l):
			a.skip(what + " layer of another kind")
			continue
		case l.Size > maxArtifactLayer || l.Size < 0:
			a.skip(what + " layer larger than " + readcap.Size(maxArtifactLayer))
			continue
		}
		tried++
		blob, err := a.readLayer(l)
		if err != nil {
			if err := a.passOver(what+" layer", err); err != nil {
				return nil, err
			}
			if a.spent {
				break
			}
			continue
		}
		out = append(out, storedLayer{mediaType: l.MediaType, annotations: l.Annotations, blob: blob})
	}
	return out, nil
}

// readLayer reads one small layer, at most maxArtifactLayer bytes whatever
// its descriptor says, by its digest from the repository (checked against
// it at the end). Not through the artifact's v1.Image: go-containerregistry
// parses the manifest again for every layer asked of a remote image, and a
// manifest of thousands of layers would cost admitfn that many times over.
func (a *artifactReader) readLayer(l v1.Descriptor) ([]byte, error) {
	d, err := name.NewDigest(a.repo+"@"+l.Digest.String(), a.nopts...)
	if err != nil {
		return nil, &shapeError{"a layer with a malformed digest"}
	}
	layer, err := a.p.Layer(a.ctx, d)
	if err != nil {
		return nil, err
	}
	rc, err := layer.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	blob, err := io.ReadAll(io.LimitReader(rc, maxArtifactLayer+1))
	if err != nil {
		return nil, err
	}
	if len(blob) > maxArtifactLayer {
		return nil, &shapeError{"a layer larger than its descriptor says"}
	}
	return blob, nil
}

// createdAnnotation is when an artifact was made, as cosign and ORAS
// annotate referrers.
const createdAnnotation = "org.opencontainers.image.created"

// referrers reads what is attached to digest through the OCI referrers
// API, or its tag fallback (sha256-<hex>), into f: the sigstore bundles
// newer cosign writes for signatures and attestations, each whole
// (keyless verification needs the certificate), and Notation's
// signatures. The newest maxArtifacts referrers are read, those whose
// artifact type says sigstore bundle or Notation signature first.
func (a *artifactReader) referrers(digest string, f *imagefacts.Facts) error {
	if a.spent {
		return nil
	}
	d, err := name.NewDigest(a.repo+"@"+digest, a.nopts...)
	if err != nil {
		return err
	}
	idx, err := remote.Referrers(d, remote.WithContext(a.ctx), remote.Reuse(a.p))
	if err != nil {
		if kind, _ := classify(err); kind == failNotFound {
			return nil
		}
		return a.passOver("referrers list", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return a.passOver("referrers list", err)
	}
	// Newest first, those that say they are sigstore bundles before the
	// rest: the artifact type differs between cosign versions (some write
	// none, or the config's), so the rest are read too, by their layer's
	// media type, but cannot push a bundle out of what admitfn reads.
	candidates := slices.Clone(im.Manifests)
	slices.Reverse(candidates)
	isKnownType := func(d v1.Descriptor) bool {
		return strings.HasPrefix(d.ArtifactType, bundleMediaType) || d.ArtifactType == notationArtifactType
	}
	sort.SliceStable(candidates, func(i, j int) bool {
		a, b := candidates[i], candidates[j]
		if isKnownType(a) != isKnownType(b) {
			return isKnownType(a)
		}
		return a.Annotations[createdAnnotation] > b.Annotations[createdAnnotation]
	})
	if len(candidates) > maxArtifacts {
		a.skipN(fmt.Sprintf("referrers past the newest %d", maxArtifacts), len(candidates)-maxArtifacts)
		candidates = candidates[:maxArtifacts]
	}
	isBundle := func(l v1.Descriptor) bool { return strings.HasPrefix(string(l.MediaType), bundleMediaType) }
	isEnvelope := func(l v1.Descriptor) bool {
		return l.MediaType == "application/jose+json" || l.MediaType == "application/cose"
	}
	for _, desc := range candidates {
		if a.spent {
			break
		}
		// Fetched by digest from the repository: the index the referrers
		// call returns cannot resolve its children itself.
		child, err := name.NewDigest(a.repo+"@"+desc.Digest.String(), a.nopts...)
		if err != nil {
			a.skip("referrer with a malformed digest")
			continue
		}
		rdesc, err := a.p.Get(a.ctx, child)
		if err != nil {
			if err := a.passOver("referrer", err); err != nil {
				return err
			}
			continue
		}
		if desc.ArtifactType == notationArtifactType {
			layers, err := a.layers(rdesc, "Notation signature", isEnvelope, maxBundleLayers)
			if err != nil {
				return err
			}
			for _, l := range layers {
				f.NotationSignatures = append(f.NotationSignatures, imagefacts.NotationSignature{MediaType: string(l.mediaType), Envelope: l.blob})
			}
			continue
		}
		layers, err := a.layers(rdesc, "referrer", isBundle, maxBundleLayers)
		if err != nil {
			return err
		}
		for _, l := range layers {
			var bundle struct {
				DSSEEnvelope json.RawMessage `json:"dsseEnvelope"`
			}
			if json.Unmarshal(l.blob, &bundle) != nil || len(bundle.DSSEEnvelope) == 0 {
				a.skip("referrer bundle without a DSSE envelope")
				continue
			}
			f.Bundles = append(f.Bundles, l.blob)
		}
	}
	return nil
}
