package resolver

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/admitfn/admitfn/functions/imagefacts"
	"github.com/admitfn/admitfn/functions/imageref"
)

// Limits on what one lookup reads. Real images are far below them: a
// manifest is a few KiB, an index of every platform Docker Hub knows tens
// of KiB, a config rarely past 100 KiB, a signature tag a few KiB per
// signature. More is not an image but a way to make admitfn read, and is
// a verdict (Facts.Malformed or Facts.Skipped), never a registry error.
const (
	// MaxLookupBytes bounds every byte one lookup reads from the registry
	// (manifests, configs, referrer lists, signature layers, token
	// answers), counted as they arrive.
	MaxLookupBytes = 1 << 20
	// maxIndexChildren bounds the manifests an index may list.
	maxIndexChildren = 128
	// maxChildrenRead bounds the children read of an index, nested ones
	// included: those a node may run, and those that name no platform.
	// Every read is two requests; the bound keeps what a pusher can make
	// one lookup do well inside the registry timeout.
	maxChildrenRead = 32
	// maxIndexDepth bounds indexes within indexes (containerd follows
	// them; real images have none).
	maxIndexDepth = 2
	// maxLookups bounds the lookups in flight in the process: with
	// MaxLookupBytes each, what hostile registries can make admitfn hold
	// at once.
	maxLookups = 16
)

// fetchWith asks the registry through p about ref to the level asked. ctx
// carries the lookup's byte budget (see fetch).
func (r *Resolver) fetchWith(ctx context.Context, p *remote.Puller, ref imageref.Ref, level imagefacts.Level, nopts []name.Option) imagefacts.Facts {
	nref, err := ref.Reference(nopts...)
	if err != nil {
		return imagefacts.Facts{Level: level, Err: err}
	}
	if level == imagefacts.LevelDigest {
		desc, err := p.Head(ctx, nref)
		if err != nil {
			return r.failure(level, ref, err)
		}
		return imagefacts.Facts{Level: level, Digest: desc.Digest.String()}
	}

	desc, err := p.Get(ctx, nref)
	if err != nil {
		return r.failure(level, ref, err)
	}
	f := imagefacts.Facts{Level: level, Digest: desc.Digest.String()}
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return r.failure(level, ref, err)
		}
		c := &children{r: r, p: p, ctx: ctx, repo: ref.Repo(), nopts: nopts}
		if err := c.read(idx, 0, &f); err != nil {
			return r.failure(level, ref, err)
		}
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return r.failure(level, ref, err)
		}
		cfg, err := imageConfig(img)
		if err != nil {
			return r.failure(level, ref, fmt.Errorf("reading the manifest and config: %w", err))
		}
		f.Platforms = []imagefacts.Platform{cfg.Platform}
		f.Configs = []imagefacts.ImageConfig{cfg}
	default:
		return imagefacts.Facts{Level: level, Digest: f.Digest, Malformed: fmt.Errorf("the registry serves a %s, not an image or an image index", desc.MediaType)}
	}
	if level >= imagefacts.LevelSignatures {
		f.ManifestMediaType, f.ManifestSize = string(desc.MediaType), desc.Size
		if failed := r.artifacts(ctx, p, ref, level, nopts, &f); failed != nil {
			return *failed
		}
	}
	return f
}

// shapeError is an image of a shape admitfn will not judge: too many
// children, nested too deep. failure turns it into Facts.Malformed.
type shapeError struct{ what string }

func (e *shapeError) Error() string { return e.what }

// children reads the children of an index by digest from the repository:
// not through the remote index, which go-containerregistry parses again
// for every child asked of it, so an index of many children would cost
// admitfn that many times over.
type children struct {
	r     *Resolver
	p     *remote.Puller
	ctx   context.Context
	repo  string
	nopts []name.Option
	// fetched counts the children fetched so far.
	fetched int
}

// get fetches the child m lists from the repository, which must serve
// the kind m says: go-containerregistry would pick one platform of an
// index served where an image was listed, and every one must be judged.
func (c *children) get(m v1.Descriptor) (*remote.Descriptor, error) {
	if c.fetched++; c.fetched > maxChildrenRead {
		return nil, &shapeError{fmt.Sprintf("the index holds more than %d images a node may run (or that name no platform), more than admitfn reads", maxChildrenRead)}
	}
	ref, err := name.NewDigest(c.repo+"@"+m.Digest.String(), c.nopts...)
	if err != nil {
		return nil, &shapeError{fmt.Sprintf("the index lists a malformed digest %q", m.Digest)}
	}
	desc, err := c.p.Get(c.ctx, ref)
	if err != nil {
		if kind, _ := classify(err); kind == failNotFound {
			return nil, &shapeError{fmt.Sprintf("the index lists %s, which the registry does not have", m.Digest)}
		}
		return nil, fmt.Errorf("fetching %s: %w", m.Digest, err)
	}
	if desc.MediaType.IsIndex() != m.MediaType.IsIndex() || desc.MediaType.IsImage() != m.MediaType.IsImage() {
		return nil, &shapeError{fmt.Sprintf("the index lists %s as a %s, and the registry serves a %s", m.Digest, m.MediaType, desc.MediaType)}
	}
	return desc, nil
}

// read records the platforms an index provides and reads the
// config of every child a node of the cluster could pick
// (imagefacts.Platform.MayRun): children that name their platform and match
// one of spec.registry.platforms, and children that name none, which
// containerd matches by their config's platform. A child that cannot be
// read is a failure of the whole lookup, never skipped. Children of
// another kind (attestation manifests, which name platform unknown/unknown,
// or artifacts containerd does not run) are passed over.
func (c *children) read(idx v1.ImageIndex, depth int, f *imagefacts.Facts) error {
	r := c.r
	manifest, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("reading the index: %w", err)
	}
	if n := len(manifest.Manifests); n > maxIndexChildren {
		return &shapeError{fmt.Sprintf("the index lists %d manifests, more than the %d admitfn reads", n, maxIndexChildren)}
	}
	for _, m := range manifest.Manifests {
		var p imagefacts.Platform
		if m.Platform != nil {
			p = imagefacts.Platform{OS: m.Platform.OS, Arch: m.Platform.Architecture, Variant: m.Platform.Variant}
			if p.OS != "unknown" {
				f.Platforms = append(f.Platforms, p)
			}
			if !r.mayRun(p) {
				continue
			}
		}
		switch {
		case m.MediaType.IsIndex():
			if depth+1 >= maxIndexDepth {
				return &shapeError{fmt.Sprintf("the index nests indexes more than %d deep", maxIndexDepth)}
			}
			desc, err := c.get(m)
			if err != nil {
				return err
			}
			child, err := desc.ImageIndex()
			if err != nil {
				return fmt.Errorf("reading the index %s: %w", m.Digest, err)
			}
			if err := c.read(child, depth+1, f); err != nil {
				return err
			}
		case m.MediaType.IsImage():
			desc, err := c.get(m)
			if err != nil {
				return err
			}
			img, err := desc.Image()
			if err != nil {
				return fmt.Errorf("reading the image %s: %w", m.Digest, err)
			}
			cfg, err := imageConfig(img)
			if err != nil {
				return fmt.Errorf("reading the config of %s: %w", m.Digest, err)
			}
			if m.Platform == nil {
				f.Platforms = append(f.Platforms, cfg.Platform)
				if !r.mayRun(cfg.Platform) {
					continue
				}
			}
			f.Configs = append(f.Configs, cfg)
		}
	}
	return nil
}

// mayRun reports whether a node of one of the policy's platforms may pick
// an image built for p.
func (r *Resolver) mayRun(p imagefacts.Platform) bool {
	for _, node := range r.settings.Platforms {
		if node.MayRun(p) {
			return true
		}
	}
	return false
}

func imageConfig(img v1.Image) (imagefacts.ImageConfig, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return imagefacts.ImageConfig{}, err
	}
	return imagefacts.ImageConfig{
		Platform: imagefacts.Platform{OS: cf.OS, Arch: cf.Architecture, Variant: cf.Variant},
		User:     cf.Config.User,
		Created:  cf.Created.Time,
		Labels:   cf.Config.Labels,
	}, nil
}
