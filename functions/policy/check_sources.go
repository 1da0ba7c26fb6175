package policy

import (
	"fmt"

	"github.com/admitfn/admitfn/functions/imageref"
)

// registriesCheck allows and denies registry hosts.
type registriesCheck struct{ allow, deny []imageref.HostPattern }

func compileRegistries(field string, r Rule, fail failFunc) imageCheck {
	l := r.Registries
	if l == nil {
		return nil
	}
	if len(l.Allow)+len(l.Deny) == 0 {
		fail(field+".registries", "checks nothing: set allow or deny")
	}
	var k registriesCheck
	for i, s := range l.Allow {
		hp, err := imageref.ParseHostPattern(s)
		if err != nil {
			fail(fmt.Sprintf("%s.registries.allow[%d]", field, i), "%v", err)
		}
		k.allow = append(k.allow, hp)
	}
	for i, s := range l.Deny {
		hp, err := imageref.ParseHostPattern(s)
		if err != nil {
			fail(fmt.Sprintf("%s.registries.deny[%d]", field, i), "%v", err)
		}
		k.deny = append(k.deny, hp)
	}
	return k
}

func (registriesCheck) level(imageref.Ref) Level { return LevelName }

func (k registriesCheck) evaluate(c *check) {
	host := c.ref.Registry
	if len(k.allow) > 0 && !matchAnyHost(k.allow, host) {
		c.fail("use an image from "+hostList(k.allow), "registry %q is not allowed", host)
	}
	for _, hp := range k.deny {
		if hp.Match(host) {
			c.fail("use an image from another registry", "registry %q is denied (pattern %q)", host, hp.String())
			break
		}
	}
}

// repositoriesCheck allows and denies repositories.
type repositoriesCheck struct{ allow, deny []imageref.RepoPattern }

func compileRepositories(field string, r Rule, fail failFunc) imageCheck {
	l := r.Repositories
	if l == nil {
		return nil
	}
	if len(l.Allow)+len(l.Deny) == 0 {
		fail(field+".repositories", "checks nothing: set allow or deny")
	}
	return repositoriesCheck{
		allow: repoPatterns(field+".repositories.allow", l.Allow, fail),
		deny:  repoPatterns(field+".repositories.deny", l.Deny, fail),
	}
}

func (repositoriesCheck) level(imageref.Ref) Level { return LevelName }

func (k repositoriesCheck) evaluate(c *check) {
	ref := c.ref
	if len(k.allow) > 0 && !matchAnyRepo(k.allow, ref) {
		c.fail("use an image from a repository matching "+repoList(k.allow), "repository %q is not allowed", ref.Repo())
	}
	for _, rp := range k.deny {
		if rp.Match(ref) {
			c.fail("use an image from another repository", "repository %q is denied (pattern %q)", ref.Repo(), rp.String())
			break
		}
	}
}
