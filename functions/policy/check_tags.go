package policy

import (
	"fmt"
	"strings"

	"github.com/admitfn/admitfn/functions/imageref"
)

// tagsCheck judges the tag the runtime will pull.
type tagsCheck struct{ *TagRule }

func compileTags(field string, r Rule, fail failFunc) imageCheck {
	t := r.Tags
	if t == nil {
		return nil
	}
	checkGlobs(field+".tags.deny", t.Deny, fail)
	checkGlobs(field+".tags.allow", t.Allow, fail)
	if !t.DenyLatest && !t.DenyUntagged && len(t.Deny) == 0 && len(t.Allow) == 0 {
		fail(field+".tags", "checks nothing: set denyLatest, denyUntagged, deny or allow")
	}
	return tagsCheck{t}
}

func (tagsCheck) level(imageref.Ref) Level { return LevelName }

func (t tagsCheck) evaluate(c *check) {
	ref := c.ref
	pinned := ref.Digest != ""
	if t.DenyUntagged && ref.Tag == "" && !pinned {
		c.fail(fmt.Sprintf("name a version tag (%s:<version>) or a digest (%s@sha256:<digest>)", ref.Original, ref.Original),
			"names no tag, so the runtime pulls the mutable tag \"latest\"")
	}
	if t.DenyLatest && ref.Tag == "latest" && !pinned {
		base := strings.TrimSuffix(ref.Original, ":latest")
		c.fail(fmt.Sprintf("name a version tag (%s:<version>) or a digest (%s@sha256:<digest>)", base, base),
			"uses the mutable tag \"latest\"")
	}
	// The globs judge the tag the runtime will pull: "latest" when none is
	// written and no digest pins the image. A digest alone names no tag.
	tag, implied := ref.Tag, ""
	if tag == "" && !pinned {
		tag, implied = "latest", " (implied: the reference names no tag)"
	}
	if tag == "" {
		return
	}
	for _, g := range t.Deny {
		if ok, _ := matchGlob(g, tag); ok {
			c.fail("use a tag that does not match "+quoteList(t.Deny), "tag %q%s is denied (pattern %q)", tag, implied, g)
			break
		}
	}
	if len(t.Allow) > 0 && !matchAnyGlob(t.Allow, tag) {
		c.fail("use a tag matching "+quoteList(t.Allow), "tag %q%s is not allowed", tag, implied)
	}
}
