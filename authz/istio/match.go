// Package istio holds the pieces of Istio's AuthorizationPolicy that do
// not depend on a request: string and path-template matching, the
// parsing of "when" condition keys, and the loader that turns Istio's own
// YAML documents (a policies.d/ directory) into ztgate policies.
//
// It must not know how a request arrived (no net/http).
package istio

import (
	"fmt"
	"strings"
)

// matchKind is how a StringMatch compares.
type matchKind uint8

const (
	exact    matchKind = iota
	prefix             // "abc*"
	suffix             // "*abc"
	presence           // "*": any non-empty value
	template           // "/a/{*}/b/{**}"
)

// StringMatch is one compiled Istio string pattern: exact, prefix "abc*",
// suffix "*abc", presence "*", or (paths only) a template with {*} and
// {**}. The zero value matches only the empty string.
type StringMatch struct {
	kind matchKind
	s    string
	fold bool
	segs []string // template segments, split on "/"
}

// String returns the pattern as written.
func (m StringMatch) String() string {
	if m.kind == template {
		return strings.Join(m.segs, "/")
	}
	switch m.kind {
	case prefix:
		return m.s + "*"
	case suffix:
		return "*" + m.s
	case presence:
		return "*"
	}
	return m.s
}

// CompileString compiles an Istio string pattern. fold makes the match
// ASCII case-insensitive (hosts).
func CompileString(pat string, fold bool) StringMatch {
	if fold {
		pat = strings.ToLower(pat)
	}
	switch {
	case pat == "*":
		return StringMatch{kind: presence, fold: fold}
	case strings.HasSuffix(pat, "*"):
		return StringMatch{kind: prefix, s: pat[:len(pat)-1], fold: fold}
	case strings.HasPrefix(pat, "*"):
		return StringMatch{kind: suffix, s: pat[1:], fold: fold}
	}
	return StringMatch{kind: exact, s: pat, fold: fold}
}

// CompilePath compiles a path pattern: a string pattern, or a path
// template where whole segments may be {*} (exactly one non-empty
// segment) or {**} (the rest of the path, zero or more characters
// including "/"; only as the last segment).
func CompilePath(pat string) (StringMatch, error) {
	if !strings.Contains(pat, "{") && !strings.Contains(pat, "}") {
		if pat != "*" && strings.Count(pat, "*") > 1 || (strings.Contains(pat, "*") && !strings.HasPrefix(pat, "*") && !strings.HasSuffix(pat, "*")) {
			return StringMatch{}, fmt.Errorf("%q has a \"*\" in the middle (use a prefix \"/a*\", a suffix \"*.css\", or a template \"/a/{*}/b\")", pat)
		}
		return CompileString(pat, false), nil
	}
	if !strings.HasPrefix(pat, "/") {
		return StringMatch{}, fmt.Errorf("%q is a path template and must start with /", pat)
	}
	if strings.Contains(pat, "*") && strings.Count(pat, "*") != strings.Count(pat, "{*}")+2*strings.Count(pat, "{**}") {
		return StringMatch{}, fmt.Errorf("%q mixes a template with a \"*\" glob (use only {*} and {**})", pat)
	}
	segs := strings.Split(pat, "/")
	for i, s := range segs {
		switch {
		case s == "{*}":
		case s == "{**}":
			if i != len(segs)-1 {
				return StringMatch{}, fmt.Errorf("%q: {**} must be the last segment", pat)
			}
		case strings.ContainsAny(s, "{}"):
			return StringMatch{}, fmt.Errorf("%q: segment %q is not a literal, {*} or {**} (an operator must be a whole segment)", pat, s)
		}
	}
	return StringMatch{kind: template, segs: segs}, nil
}

// Match reports whether v matches.
func (m StringMatch) Match(v string) bool {
	if m.fold {
		v = lowerASCII(v)
	}
	switch m.kind {
	case exact:
		return v == m.s
	case prefix:
		return strings.HasPrefix(v, m.s)
	case suffix:
		return strings.HasSuffix(v, m.s)
	case presence:
		return v != ""
	case template:
		return matchTemplate(m.segs, v)
	}
	return false
}

func matchTemplate(segs []string, path string) bool {
	for i, s := range segs {
		if s == "{**}" {
			return true // the rest, including nothing
		}
		var seg string
		j := strings.IndexByte(path, '/')
		last := j < 0
		if last {
			seg = path
		} else {
			seg, path = path[:j], path[j+1:]
		}
		switch s {
		case "{*}":
			if seg == "" {
				return false
			}
		default:
			if seg != s {
				return false
			}
		}
		if last {
			// The path ended: the pattern must end here too, or continue
			// with a {**} that matches the empty rest.
			return i == len(segs)-1
		}
	}
	return false // the path has more segments than the pattern
}

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// FirstSegment returns the literal first path segment every path this
// pattern matches must have ("/api/v1/{*}" → "api"), for indexing.
func (m StringMatch) FirstSegment() (string, bool) {
	switch m.kind {
	case exact:
		if !strings.HasPrefix(m.s, "/") {
			return "", false
		}
		seg, _, _ := strings.Cut(m.s[1:], "/")
		return seg, true
	case prefix:
		if !strings.HasPrefix(m.s, "/") {
			return "", false
		}
		seg, _, ok := strings.Cut(m.s[1:], "/")
		return seg, ok
	case template:
		if len(m.segs) < 2 || m.segs[0] != "" || m.segs[1] == "{*}" || m.segs[1] == "{**}" {
			return "", false
		}
		return m.segs[1], true
	}
	return "", false
}

// PathFirstSegment is the first segment of a request path ("/a/b" → "a").
func PathFirstSegment(path string) string {
	if !strings.HasPrefix(path, "/") {
		return "\x00" // matches no index key
	}
	seg, _, _ := strings.Cut(path[1:], "/")
	return seg
}
