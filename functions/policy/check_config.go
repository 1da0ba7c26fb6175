package policy

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/admitfn/admitfn/functions/imageref"
)

// platformsCheck wants the image (index) to provide each platform.
type platformsCheck struct{ want []Platform }

func compilePlatforms(field string, r Rule, fail failFunc) imageCheck {
	if len(r.Platforms) == 0 {
		return nil
	}
	return platformsCheck{checkPlatforms(field+".platforms", r.Platforms, fail)}
}

func (platformsCheck) level(imageref.Ref) Level { return LevelConfig }

func (k platformsCheck) evaluate(c *check) {
	for _, want := range k.want {
		if !providesPlatform(c.facts.Platforms, want) {
			c.fail("use an image built for "+platformList(k.want), "does not provide platform %s (it provides %s)", want, platformList(c.facts.Platforms))
		}
	}
}

// nonRootCheck wants the container not to run as root, as the kubelet's
// runAsNonRoot decides it.
type nonRootCheck struct{}

func compileNonRoot(_ string, r Rule, _ failFunc) imageCheck {
	if !r.NonRoot {
		return nil
	}
	return nonRootCheck{}
}

func (nonRootCheck) level(imageref.Ref) Level { return LevelConfig }

func (nonRootCheck) evaluate(c *check) {
	if c.image.Volume {
		return // mounted, not run
	}
	for _, cfg := range c.configs() {
		if problem, fix := nonRoot(c.image.RunAsUser, cfg.User); problem != "" {
			c.fail(fix, "%s%s", problem, c.on(cfg))
		}
	}
}

// imageUser reads an image config's User as containerd and CRI-O report it
// to the kubelet: the part before ":" is a uid when strconv.ParseInt reads
// it ("00", "+0" and "-0" are uid 0), else a user name; empty is neither.
func imageUser(user string) (uid *int64, name string) {
	if user == "" {
		return nil, ""
	}
	u, _, _ := strings.Cut(user, ":")
	n, err := strconv.ParseInt(u, 10, 64)
	if err != nil {
		return nil, u
	}
	return &n, ""
}

// nonRoot answers as the kubelet's runAsNonRoot check does: the pod's
// runAsUser, when set, decides; otherwise the image's user must be a uid
// from 1 to 2^31-1, and a user name is refused because nothing can tell
// whether /etc/passwd in the image maps it to 0. It returns the problem
// and its fix, or "" when the container will not run as root.
func nonRoot(runAsUser *int64, configUser string) (problem, fix string) {
	const build = "build the image with USER set to a non-zero numeric uid, or set securityContext.runAsUser"
	if runAsUser != nil {
		if *runAsUser == 0 {
			return "runs as root (securityContext.runAsUser is 0)", "set securityContext.runAsUser to a non-zero uid"
		}
		return "", ""
	}
	uid, name := imageUser(configUser)
	switch {
	case name != "":
		return fmt.Sprintf("has a user name (config user %q), which cannot be verified not to be root", configUser), build
	case uid == nil:
		return `runs as root (config user unset, so root)`, build
	case *uid == 0:
		return fmt.Sprintf("runs as root (config user %q)", configUser), build
	case *uid < 1 || *uid > math.MaxInt32:
		return fmt.Sprintf("has an invalid uid (config user %q; uids run from 1 to %d)", configUser, math.MaxInt32), build
	}
	return "", ""
}

// maxAgeCheck wants the image built recently enough.
type maxAgeCheck struct{ max time.Duration }

func compileMaxAge(field string, r Rule, fail failFunc) imageCheck {
	if r.MaxAge == "" {
		return nil
	}
	k := maxAgeCheck{duration(field+".maxAge", r.MaxAge, 0, fail)}
	if k.max <= 0 {
		fail(field+".maxAge", "%q must be more than 0s", r.MaxAge)
	}
	return k
}

func (maxAgeCheck) level(imageref.Ref) Level { return LevelConfig }

func (k maxAgeCheck) evaluate(c *check) {
	for _, cfg := range c.configs() {
		switch age := c.now.Sub(cfg.Created); {
		case cfg.Created.IsZero():
			c.fail("rebuild the image with a creation time", "has no creation time%s", c.on(cfg))
		case age > k.max:
			c.fail(fmt.Sprintf("rebuild the image (at most %s old)", k.max),
				"was created %s%s, %s ago, more than %s", cfg.Created.UTC().Format(time.RFC3339), c.on(cfg), age.Round(time.Second), k.max)
		}
	}
}

// labelsCheck wants image config labels present, or matching a glob.
type labelsCheck struct{ want []LabelRequirement }

func compileRequiredLabels(field string, r Rule, fail failFunc) imageCheck {
	if len(r.RequiredLabels) == 0 {
		return nil
	}
	var k labelsCheck
	for i, l := range r.RequiredLabels {
		f := fmt.Sprintf("%s.requiredLabels[%d]", field, i)
		key, pat, has := strings.Cut(l, "=")
		if key == "" {
			fail(f, "%q has no label key", l)
		}
		if has {
			checkGlobs(f, []string{pat}, fail)
		}
		k.want = append(k.want, LabelRequirement{Key: key, Pattern: pat, HasPattern: has})
	}
	return k
}

func (labelsCheck) level(imageref.Ref) Level { return LevelConfig }

func (k labelsCheck) evaluate(c *check) {
	for _, cfg := range c.configs() {
		for _, l := range k.want {
			v, ok := cfg.Labels[l.Key]
			if !ok {
				c.fail("add the label "+l.String()+" to the image", "lacks label %q%s", l.Key, c.on(cfg))
				continue
			}
			if l.HasPattern {
				if ok, _ := matchGlob(l.Pattern, v); !ok {
					c.fail("set the label "+l.String(), "label %q is %q%s, not %q", l.Key, v, c.on(cfg), l.Pattern)
				}
			}
		}
	}
}
