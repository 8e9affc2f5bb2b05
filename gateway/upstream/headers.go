package upstream

import (
	"fmt"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/ztgate/ztgate/configs"
)

// Header is one header name and value, e.g. added by an authz decision.
type Header struct {
	Name  string
	Value string
}

// HeaderOps is a compiled configs.HeaderOps: names canonicalised once.
// Apply runs remove, then set, then add.
type HeaderOps struct {
	remove []string
	set    []Header
	add    []Header
}

// CompileHeaderOps compiles a route's request_headers or
// response_headers. configs has validated the syntax; the error is for
// callers that build HeaderOps themselves.
func CompileHeaderOps(ops configs.HeaderOps) (*HeaderOps, error) {
	if len(ops.Set) == 0 && len(ops.Add) == 0 && len(ops.Remove) == 0 {
		return nil, nil
	}
	c := &HeaderOps{}
	for _, n := range ops.Remove {
		c.remove = append(c.remove, textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(n)))
	}
	parse := func(list []string) ([]Header, error) {
		var out []Header
		for _, s := range list {
			name, val, ok := strings.Cut(s, ":")
			name = strings.TrimSpace(name)
			if !ok || name == "" {
				return nil, fmt.Errorf("%q must be \"Header-Name: value\"", s)
			}
			out = append(out, Header{textproto.CanonicalMIMEHeaderKey(name), strings.TrimSpace(val)})
		}
		return out, nil
	}
	var err error
	if c.set, err = parse(ops.Set); err != nil {
		return nil, err
	}
	if c.add, err = parse(ops.Add); err != nil {
		return nil, err
	}
	return c, nil
}

// Apply edits h. A nil *HeaderOps does nothing.
func (c *HeaderOps) Apply(h http.Header) {
	if c == nil {
		return
	}
	for _, n := range c.remove {
		delete(h, n)
	}
	for _, s := range c.set {
		h[s.Name] = []string{s.Value}
	}
	for _, a := range c.add {
		h[a.Name] = append(h[a.Name], a.Value)
	}
}

// Standard forwarding headers.
const (
	hdrXFF       = "X-Forwarded-For"
	hdrXFProto   = "X-Forwarded-Proto"
	hdrXFHost    = "X-Forwarded-Host"
	hdrRequestID = "X-Request-Id"
	hdrForwarded = "Forwarded"
)

// hopHeaders are connection-scoped (RFC 9110 7.6.1) and never forwarded.
// Any Proxy-* header is dropped too.
var hopHeaders = map[string]bool{
	"Connection":        true,
	"Keep-Alive":        true,
	"Te":                true, // "TE: trailers" is restored for the upstream
	"Trailer":           true,
	"Transfer-Encoding": true,
	"Upgrade":           true,
}

func isHop(k string) bool {
	return hopHeaders[k] || (len(k) > 6 && k[:6] == "Proxy-")
}

// copyEndToEnd copies src into dst without hop-by-hop headers, nor the
// headers src's Connection names. Value slices are shared with a capped
// capacity, so a later append on either side reallocates instead of
// writing into the other.
func copyEndToEnd(dst, src http.Header) {
	conn := src["Connection"]
	for k, v := range src {
		if isHop(k) || len(conn) > 0 && listed(conn, k) {
			continue
		}
		dst[k] = v[:len(v):len(v)]
	}
}

// listed reports whether the comma-separated values contain token
// (case-insensitive), without allocating.
func listed(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var f string
			f, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// hasToken reports whether a comma-separated header contains token
// (case-insensitive).
func hasToken(h http.Header, name, token string) bool {
	return listed(h[name], token)
}

// upgradeType returns the protocol a request asks to upgrade to, or "".
func upgradeType(h http.Header) string {
	if !hasToken(h, "Connection", "upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}
