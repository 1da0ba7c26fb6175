package policy

import (
	"strings"

	"github.com/admitfn/admitfn/functions/imageref"
)

// An imageCheck is one check a rule carries over every image in its scope.
// Adding one is a file of its own: the check's type, its compile function
// (listed in imageCheckCompilers), its field in Rule, a row in README's
// table and an entry in config/300-policy.yaml's _example.
type imageCheck interface {
	// level is what the check must know about ref.
	level(ref imageref.Ref) Level
	// evaluate records the check's problems with one image in c. A check
	// above LevelName is evaluated only once the registry has answered.
	evaluate(c *check)
}

// compiler builds a rule's check from its document, or returns nil when
// the rule does not ask for it; it reports bad values through fail.
type compiler func(field string, r Rule, fail failFunc) imageCheck

// imageCheckCompilers lists every image check, in the order a rule
// evaluates them.
func imageCheckCompilers() []compiler {
	return []compiler{
		compileTags, compileRegistries, compileRepositories, compileRequireDigest, compileDigests,
		compileResolvable, compilePlatforms, compileNonRoot, compileMaxAge, compileRequiredLabels,
		compileSignatures, compileAttestations,
	}
}

// configs returns the image configs of the inspected platforms, recording
// once per rule and image that there are none.
func (c *check) configs() []ImageConfig {
	if len(c.facts.Configs) == 0 && !c.noConfigs {
		c.noConfigs = true
		c.fail("use an image built for one of the inspected platforms", "has no image config for the inspected platforms (it provides %s)", platformList(c.facts.Platforms))
	}
	return c.facts.Configs
}

// on names the platform of cfg in a problem, when the image has several.
func (c *check) on(cfg ImageConfig) string {
	if len(c.facts.Configs) > 1 || len(c.facts.Platforms) > 1 {
		return " on " + cfg.Platform.String()
	}
	return ""
}

// skipped names, for a reason, the artifacts the resolver passed over
// while looking for signatures and attestations ("" when none were).
func (c *check) skipped() string {
	if len(c.facts.Skipped) == 0 {
		return ""
	}
	return " (admitfn passed over " + strings.Join(c.facts.Skipped, ", ") + ")"
}
