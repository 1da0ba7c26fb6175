package vap

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/policy"
)

// violation is the CEL for one image's violation of a rule, in the words
// of the engine's Violation.String (enforce) or Decision.Warnings (warn,
// audit); problem and fix are CEL string expressions over r.
func violation(mode policy.Mode, rule, r, problem, fix string) string {
	if mode == policy.Enforce {
		return fmt.Sprintf(`'image "' + %[1]s.ref + '" (' + %[1]s.field + ') violates rule ' + %[2]s + ': ' + %[3]s + '; to pass, ' + %[4]s`, r, celString(strconv.Quote(rule)), problem, fix)
	}
	return fmt.Sprintf(`'admitfn rule ' + %s + ': ' + %s.ref + ': ' + %s`, celString(strconv.Quote(rule)), r, problem)
}

// requestViolation is violation for a rule on the request itself.
func requestViolation(mode policy.Mode, rule, field, problem, fix string) string {
	if mode == policy.Enforce {
		return fmt.Sprintf(`%s + ' violates rule ' + %s + ': ' + %s + '; to pass, ' + %s`, celString(field), celString(strconv.Quote(rule)), problem, fix)
	}
	return fmt.Sprintf(`'admitfn rule ' + %s + ': ' + %s + ': ' + %s`, celString(strconv.Quote(rule)), celString(field), problem)
}

// inNamespace is CompiledRule.inNamespace over ns, the request's
// namespace.
func inNamespace(r policy.Rule, ns string) (string, error) {
	in := "true"
	if len(r.Namespaces) > 0 {
		var err error
		if in, err = anyGlob(ns, r.Namespaces); err != nil {
			return "", err
		}
	}
	out, err := anyGlob(ns, r.ExemptNamespaces)
	if err != nil {
		return "", err
	}
	return "(" + in + " && !" + out + ")", nil
}

// imageScope is CompiledRule.applies over r (a parsed reference).
func imageScope(r policy.Rule) (string, error) {
	inNS, err := inNamespace(r, "variables.ns")
	if err != nil {
		return "", err
	}
	in := "true"
	if len(r.Images) > 0 {
		if in, err = anyRepo("r.segs", r.Images); err != nil {
			return "", err
		}
	}
	out, err := anyRepo("r.segs", r.ExcludeImages)
	if err != nil {
		return "", err
	}
	return "(" + inNS + " && " + in + " && !" + out + ")", nil
}

// A check is one way a rule fails an image: when (a CEL condition over
// r) and what the violation says.
type check struct{ when, violation string }

// list is the CEL list of c's violation, empty unless it fails.
func (c check) list() string { return "(" + c.when + " ? [" + c.violation + "] : [])" }

// imageChecks are one rule's checks of image r, in the engine's order
// (tags, registries, repositories, requireDigest).
func imageChecks(mode policy.Mode, rule policy.Rule) ([]check, error) {
	var out []check
	fail := func(cond, problem, fix string) {
		out = append(out, check{cond, violation(mode, rule.Name, "r", problem, fix)})
	}
	if t := rule.Tags; t != nil {
		if t.DenyUntagged {
			fail(`r.tag == '' && r.at == ''`, celString(`names no tag, so the runtime pulls the mutable tag "latest"`),
				`'name a version tag (' + r.ref + ':<version>) or a digest (' + r.ref + '@sha256:<digest>)'`)
		}
		if t.DenyLatest {
			base := `r.ref.substring(0, size(r.ref) - 7)`
			fail(`r.tag == 'latest' && r.at == ''`, celString(`uses the mutable tag "latest"`),
				`'name a version tag (' + `+base+` + ':<version>) or a digest (' + `+base+` + '@sha256:<digest>)'`)
		}
		if len(t.Deny) > 0 {
			first, err := firstGlob("r.jtag", t.Deny)
			if err != nil {
				return nil, err
			}
			fail(`r.jtag != '' && `+first+` != ''`, `'tag "' + r.jtag + '"' + r.implied + ' is denied (pattern ' + `+first+` + ')'`,
				celString("use a tag that does not match "+quoteList(t.Deny)))
		}
		if len(t.Allow) > 0 {
			allowed, err := anyGlob("r.jtag", t.Allow)
			if err != nil {
				return nil, err
			}
			fail(`r.jtag != '' && !`+allowed, `'tag "' + r.jtag + '"' + r.implied + ' is not allowed'`,
				celString("use a tag matching "+quoteList(t.Allow)))
		}
	}
	if l := rule.Registries; l != nil {
		var allow, deny []string
		for _, s := range l.Allow {
			hp, err := imageref.ParseHostPattern(s)
			if err != nil {
				return nil, err
			}
			allow = append(allow, hp.String())
		}
		for _, s := range l.Deny {
			hp, err := imageref.ParseHostPattern(s)
			if err != nil {
				return nil, err
			}
			deny = append(deny, hp.String())
		}
		if len(allow) > 0 {
			any, err := anyGlob("r.registry", allow)
			if err != nil {
				return nil, err
			}
			fail("!"+any, `'registry "' + r.registry + '" is not allowed'`, celString("use an image from "+quoteList(allow)))
		}
		if len(deny) > 0 {
			first, err := firstGlob("r.registry", deny)
			if err != nil {
				return nil, err
			}
			fail(first+` != ''`, `'registry "' + r.registry + '" is denied (pattern ' + `+first+` + ')'`, celString("use an image from another registry"))
		}
	}
	if l := rule.Repositories; l != nil {
		if len(l.Allow) > 0 {
			any, err := anyRepo("r.segs", l.Allow)
			if err != nil {
				return nil, err
			}
			var names []string
			for _, s := range l.Allow {
				rp, _ := imageref.ParseRepoPattern(s)
				names = append(names, rp.String())
			}
			fail("!"+any, `'repository "' + r.repo + '" is not allowed'`, celString("use an image from a repository matching "+quoteList(names)))
		}
		if len(l.Deny) > 0 {
			first, err := firstRepo("r.segs", l.Deny)
			if err != nil {
				return nil, err
			}
			fail(first+` != ''`, `'repository "' + r.repo + '" is denied (pattern ' + `+first+` + ')'`, celString("use an image from another repository"))
		}
	}
	if rule.RequireDigest {
		fail(`r.at == ''`, celString("is not pinned to a digest"), `'pin the image by digest: ' + r.repo + '@sha256:<digest>'`)
	}
	return out, nil
}

// A patternRegexp turns a pattern into the RE2 expression CEL matches
// with, and the spelling the engine's messages quote.
type patternRegexp func(pattern string) (re, name string, err error)

// glob is a path.Match pattern's patternRegexp.
func glob(g string) (string, string, error) {
	re, err := globRegexp(g)
	return re, g, err
}

// repoRegexp is a repository pattern as one expression over a
// repository's segments, each followed by '/' ("index.docker.io/library/nginx/"):
// a glob per segment, "**" any number of whole segments.
func repoRegexp(pattern string) (string, string, error) {
	rp, err := imageref.ParseRepoPattern(pattern)
	if err != nil {
		return "", "", err
	}
	var b strings.Builder
	b.WriteString("^")
	for _, seg := range strings.Split(rp.String(), "/") {
		if seg == "**" {
			b.WriteString(`(?:[^/]+/)*`)
			continue
		}
		segment(&b, seg)
		b.WriteString("/")
	}
	b.WriteString("$")
	return b.String(), rp.String(), nil
}

// anyMatch is CEL telling whether expr matches one of patterns.
func anyMatch(expr string, patterns []string, regexp patternRegexp) (string, error) {
	if len(patterns) == 0 {
		return "false", nil
	}
	var res []string
	for _, p := range patterns {
		re, _, err := regexp(p)
		if err != nil {
			return "", err
		}
		res = append(res, expr+".matches("+celString(re)+")")
	}
	return "(" + strings.Join(res, " || ") + ")", nil
}

// firstMatch is CEL for the first of patterns that expr matches,
// Go-quoted as the engine's messages quote it, or "".
func firstMatch(expr string, patterns []string, regexp patternRegexp) (string, error) {
	out := "''"
	for i := len(patterns) - 1; i >= 0; i-- {
		re, name, err := regexp(patterns[i])
		if err != nil {
			return "", err
		}
		out = fmt.Sprintf("(%s.matches(%s) ? %s : %s)", expr, celString(re), celString(strconv.Quote(name)), out)
	}
	return out, nil
}

func anyGlob(expr string, globs []string) (string, error) { return anyMatch(expr, globs, glob) }
func firstGlob(expr string, globs []string) (string, error) {
	return firstMatch(expr, globs, glob)
}
func anyRepo(expr string, patterns []string) (string, error) {
	return anyMatch(expr, patterns, repoRegexp)
}
func firstRepo(expr string, patterns []string) (string, error) {
	return firstMatch(expr, patterns, repoRegexp)
}

// celString is s as a CEL string literal: Go's quoting is valid CEL.
func celString(s string) string { return strconv.Quote(s) }

func celList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = celString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// quoteList is the engine's list of quoted patterns.
func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
