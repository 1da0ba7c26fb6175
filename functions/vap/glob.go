package vap

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf8"
)

// globRegexp translates a path.Match pattern into an anchored RE2
// expression that matches exactly the strings path.Match matches, so that
// CEL's matches() decides as the engine does. Every literal is written as
// \x{…}, so the result holds no quote and no character RE2 treats
// specially. No part of it matches a '/': path.Match's '*' and '?' never
// do, and the engine never matches a glob against a string holding one, so
// character classes leave it out too, which lets a repository pattern's
// segments be joined with '/' into one expression.
func globRegexp(glob string) (string, error) {
	if _, err := path.Match(glob, ""); err != nil {
		return "", fmt.Errorf("%q is not a valid glob: %w", glob, err)
	}
	var b strings.Builder
	b.WriteString("^")
	segment(&b, glob)
	b.WriteString("$")
	return b.String(), nil
}

// segment writes the expression of one valid glob, unanchored.
func segment(b *strings.Builder, glob string) {
	for glob != "" {
		switch glob[0] {
		case '*':
			b.WriteString(`[^/]*`)
			glob = glob[1:]
		case '?':
			b.WriteString(`[^/]`)
			glob = glob[1:]
		case '[':
			glob = class(b, glob[1:])
		case '\\':
			r, n := utf8.DecodeRuneInString(glob[1:])
			literal(b, r)
			glob = glob[1+n:]
		default:
			r, n := utf8.DecodeRuneInString(glob)
			literal(b, r)
			glob = glob[n:]
		}
	}
}

func literal(b *strings.Builder, r rune) { fmt.Fprintf(b, `\x{%x}`, r) }

// class writes the character class that glob (just past its '[') opens
// and returns what follows its ']'. A range whose ends are reversed
// matches nothing in path.Match and would not compile in RE2, so it is
// left out; a class left with no range matches nothing (or, negated,
// any character but '/').
func class(b *strings.Builder, glob string) string {
	negated := false
	if glob != "" && glob[0] == '^' {
		negated, glob = true, glob[1:]
	}
	type span struct{ lo, hi rune }
	var spans []span
	first := true
	for first || glob[0] != ']' {
		first = false
		lo, rest := classChar(glob)
		hi := lo
		if rest[0] == '-' {
			hi, rest = classChar(rest[1:])
		}
		glob = rest
		if lo > hi {
			continue
		}
		// Cut '/' out of the range: the class never sees one.
		if lo <= '/' && '/' <= hi {
			if lo < '/' {
				spans = append(spans, span{lo, '/' - 1})
			}
			if hi > '/' {
				spans = append(spans, span{'/' + 1, hi})
			}
			continue
		}
		spans = append(spans, span{lo, hi})
	}
	glob = glob[1:]
	switch {
	case len(spans) == 0 && negated:
		b.WriteString(`[^/]`)
	case len(spans) == 0:
		b.WriteString(`[^\x{0}-\x{10ffff}]`)
	default:
		b.WriteString("[")
		if negated {
			b.WriteString(`^/`)
		}
		for _, s := range spans {
			literal(b, s.lo)
			if s.hi != s.lo {
				b.WriteString("-")
				literal(b, s.hi)
			}
		}
		b.WriteString("]")
	}
	return glob
}

// classChar reads one character of a class, escaped or not.
func classChar(glob string) (rune, string) {
	if glob[0] == '\\' {
		glob = glob[1:]
	}
	r, n := utf8.DecodeRuneInString(glob)
	return r, glob[n:]
}
