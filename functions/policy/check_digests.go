package policy

import (
	"fmt"

	"github.com/admitfn/admitfn/functions/imageref"
)

// requireDigestCheck wants the reference pinned by digest.
type requireDigestCheck struct{}

func compileRequireDigest(_ string, r Rule, _ failFunc) imageCheck {
	if !r.RequireDigest {
		return nil
	}
	return requireDigestCheck{}
}

func (requireDigestCheck) level(imageref.Ref) Level { return LevelName }

func (requireDigestCheck) evaluate(c *check) {
	ref := c.ref
	if ref.Digest != "" {
		return
	}
	fix := "pin the image by digest: " + ref.Repo() + "@sha256:<digest>"
	if c.facts.Digest != "" {
		fix = "pin the image by digest: " + ref.Repo() + "@" + c.facts.Digest
	}
	c.fail(fix, "is not pinned to a digest")
}

// digestsCheck wants the digest the runtime pulls on an allow-list: the
// written one, else the one the tag resolves to.
type digestsCheck struct {
	rule    string
	allowed map[string]bool
}

func compileDigests(field string, r Rule, fail failFunc) imageCheck {
	if r.Digests == nil {
		return nil
	}
	if len(r.Digests) == 0 {
		fail(field+".digests", "is empty: list the allowed digests")
	}
	k := digestsCheck{rule: r.Name, allowed: map[string]bool{}}
	for i, d := range r.Digests {
		if !validDigest(d) {
			fail(fmt.Sprintf("%s.digests[%d]", field, i), "%q is not a sha256:<64 hex> digest", d)
		}
		k.allowed[d] = true
	}
	return k
}

func (digestsCheck) level(ref imageref.Ref) Level {
	if ref.Digest != "" {
		return LevelName
	}
	return LevelDigest
}

func (k digestsCheck) evaluate(c *check) {
	digest := c.ref.Digest
	if digest == "" {
		digest = c.facts.Digest
	}
	if digest == "" || k.allowed[digest] {
		return
	}
	c.fail("use an image whose digest is on the allow-list of rule "+strconvQuote(k.rule)+", or add "+digest+" to it",
		"digest %s is not on the allow-list", digest)
}

// resolvableCheck wants the tag (or digest) to exist in its registry: the
// registry's answer itself is the check.
type resolvableCheck struct{}

func compileResolvable(_ string, r Rule, _ failFunc) imageCheck {
	if !r.Resolvable {
		return nil
	}
	return resolvableCheck{}
}

func (resolvableCheck) level(imageref.Ref) Level { return LevelDigest }

func (resolvableCheck) evaluate(*check) {}
