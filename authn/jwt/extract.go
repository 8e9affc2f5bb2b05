package jwt

import (
	"net/http"
	"net/textproto"
	"strings"

	"github.com/ztgate/ztgate/configs"
)

// locKind is where a token was found.
type locKind int

const (
	locHeader locKind = iota
	locParam
	locCookie
)

// location is one place a provider looks for its token.
type location struct {
	kind   locKind
	name   string // canonical header name, query parameter or cookie name
	prefix string // header value prefix, matched case-insensitively
}

func (l location) String() string {
	switch l.kind {
	case locHeader:
		return "header " + l.name
	case locParam:
		return "query parameter " + l.name
	default:
		return "cookie " + l.name
	}
}

func compileLocations(p *configs.JWTProvider) []location {
	var locs []location
	for _, h := range p.FromHeaders {
		locs = append(locs, location{kind: locHeader, name: textproto.CanonicalMIMEHeaderKey(h.Name), prefix: h.Prefix})
	}
	for _, q := range p.FromParams {
		locs = append(locs, location{kind: locParam, name: q})
	}
	for _, c := range p.FromCookies {
		locs = append(locs, location{kind: locCookie, name: c})
	}
	return locs
}

// extract returns the tokens found at loc, in request order. A header
// value without the prefix is not a token for this location (another
// scheme such as Basic).
func extract(r *http.Request, loc location) []string {
	var out []string
	switch loc.kind {
	case locHeader:
		for _, v := range r.Header[loc.name] {
			if tok, ok := cutPrefixFold(v, loc.prefix); ok {
				if tok = strings.TrimSpace(tok); tok != "" {
					out = append(out, tok)
				}
			}
		}
	case locParam:
		if r.URL == nil || r.URL.RawQuery == "" {
			return nil
		}
		for _, v := range queryValues(r.URL.RawQuery, loc.name) {
			if v != "" {
				out = append(out, v)
			}
		}
	case locCookie:
		for _, c := range r.CookiesNamed(loc.name) {
			if c.Value != "" {
				out = append(out, c.Value)
			}
		}
	}
	return out
}

// cutPrefixFold is strings.CutPrefix with an ASCII case-insensitive
// prefix, since auth schemes are case-insensitive (RFC 7235).
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

// queryValues returns the unescaped values of name in a raw query,
// ignoring pairs that do not unescape.
func queryValues(raw, name string) []string {
	var out []string
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(pair, "=")
		if k != name {
			if uk, err := unescape(k); err != nil || uk != name {
				continue
			}
		}
		if uv, err := unescape(v); err == nil {
			out = append(out, uv)
		}
	}
	return out
}

// strip removes the token from loc so that it does not reach the upstream.
func strip(r *http.Request, loc location, tok string) {
	switch loc.kind {
	case locHeader:
		vals := r.Header[loc.name]
		kept := vals[:0:0]
		for _, v := range vals {
			if t, ok := cutPrefixFold(v, loc.prefix); ok && strings.TrimSpace(t) == tok {
				continue
			}
			kept = append(kept, v)
		}
		if len(kept) == 0 {
			r.Header.Del(loc.name)
		} else {
			r.Header[loc.name] = kept
		}
	case locParam:
		if r.URL == nil {
			return
		}
		var b strings.Builder
		raw := r.URL.RawQuery
		for raw != "" {
			var pair string
			pair, raw, _ = strings.Cut(raw, "&")
			k, _, _ := strings.Cut(pair, "=")
			if uk, err := unescape(k); err == nil && uk == loc.name {
				continue
			}
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(pair)
		}
		r.URL.RawQuery = b.String()
		if r.RequestURI != "" {
			r.RequestURI = r.URL.RequestURI() // access logs must not show the token
		}
	case locCookie:
		cookies := r.Cookies()
		r.Header.Del("Cookie")
		var b strings.Builder
		for _, c := range cookies {
			if c.Name == loc.name {
				continue
			}
			if b.Len() > 0 {
				b.WriteString("; ")
			}
			b.WriteString(c.Name + "=" + c.Value)
		}
		if b.Len() > 0 {
			r.Header.Set("Cookie", b.String())
		}
	}
}
