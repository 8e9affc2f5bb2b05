package gateway

import (
	"net"
	"regexp"
	"sort"
	"strings"

	"github.com/ztgate/ztgate/configs"
)

// pathKind orders path matches from most to least specific.
type pathKind int

const (
	pathExact pathKind = iota
	pathPrefix
	pathRegex
	pathAny
)

// route is one compiled route. It is immutable once compiled.
type route struct {
	name      string
	index     int // position in the config file, for ties and logs
	listeners map[string]bool
	kind      pathKind
	path      string // exact path or prefix
	re        *regexp.Regexp
	methods   map[string]bool

	// What to do with a match.
	upstream string
	direct   *configs.DirectResponse
	cfg      *configs.Route
}

func (r *route) matchPath(p string) bool {
	switch r.kind {
	case pathExact:
		return p == r.path
	case pathPrefix:
		return strings.HasPrefix(p, r.path)
	case pathRegex:
		return r.re.MatchString(p)
	default:
		return true
	}
}

func (r *route) matches(listener, path, method string) bool {
	if r.listeners != nil && !r.listeners[listener] {
		return false
	}
	if r.methods != nil && !r.methods[method] {
		return false
	}
	return r.matchPath(path)
}

// less orders routes within one host tier: exact path, longest prefix,
// regex, any path; then routes with methods first; then file order.
func (r *route) less(o *route) bool {
	if r.kind != o.kind {
		return r.kind < o.kind
	}
	if r.kind == pathPrefix && len(r.path) != len(o.path) {
		return len(r.path) > len(o.path)
	}
	if (r.methods != nil) != (o.methods != nil) {
		return r.methods != nil
	}
	return r.index < o.index
}

// Router picks the route for a request. Host selection comes first (exact
// host, then the longest matching wildcard, then routes for any host), as
// Envoy picks a virtual host before its routes; within a host tier routes
// are ordered by route.less.
type Router struct {
	exact    map[string][]*route // host → routes naming it exactly
	wildcard map[string][]*route // "example.com" → routes naming "*.example.com"
	any      []*route            // routes with no host match
	all      []*route            // every route, in file order
}

// compileRouter compiles the routes of cfg. cfg has been validated, so
// the regexes compile.
func compileRouter(cfg *configs.Config) (*Router, error) {
	rt := &Router{exact: map[string][]*route{}, wildcard: map[string][]*route{}}
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		r := &route{name: rc.Name, index: i, upstream: rc.Upstream, direct: rc.DirectResponse, cfg: rc}
		m := rc.Match
		switch {
		case m.Path != "":
			r.kind, r.path = pathExact, m.Path
		case m.PathPrefix != "":
			r.kind, r.path = pathPrefix, m.PathPrefix
		case m.PathRegex != "":
			re, err := regexp.Compile("^(?:" + m.PathRegex + ")$")
			if err != nil {
				return nil, err
			}
			r.kind, r.re = pathRegex, re
		default:
			r.kind = pathAny
		}
		if len(m.Methods) > 0 {
			r.methods = map[string]bool{}
			for _, meth := range m.Methods {
				r.methods[strings.ToUpper(meth)] = true
			}
		}
		if len(rc.Listeners) > 0 {
			r.listeners = map[string]bool{}
			for _, l := range rc.Listeners {
				r.listeners[l] = true
			}
		}
		rt.all = append(rt.all, r)
		hosts := m.Hosts
		if len(hosts) == 0 {
			rt.any = append(rt.any, r)
			continue
		}
		for _, h := range hosts {
			h = normalizeHost(h)
			switch {
			case h == "*":
				rt.any = append(rt.any, r)
			case strings.HasPrefix(h, "*."):
				rt.wildcard[h[2:]] = append(rt.wildcard[h[2:]], r)
			default:
				rt.exact[h] = append(rt.exact[h], r)
			}
		}
	}
	sortRoutes := func(rs []*route) {
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].less(rs[j]) })
	}
	for _, rs := range rt.exact {
		sortRoutes(rs)
	}
	for _, rs := range rt.wildcard {
		sortRoutes(rs)
	}
	sortRoutes(rt.any)
	return rt, nil
}

// Match returns the route for a request, or nil. host must already be
// normalised (normalizeHost).
func (rt *Router) Match(listener, host, path, method string) *route {
	if r := first(rt.exact[host], listener, path, method); r != nil {
		return r
	}
	// Longest wildcard suffix first: for a.b.example.com try
	// *.b.example.com, then *.example.com, then *.com.
	for h := host; ; {
		i := strings.IndexByte(h, '.')
		if i < 0 {
			break
		}
		h = h[i+1:]
		if r := first(rt.wildcard[h], listener, path, method); r != nil {
			return r
		}
	}
	return first(rt.any, listener, path, method)
}

func first(rs []*route, listener, path, method string) *route {
	for _, r := range rs {
		if r.matches(listener, path, method) {
			return r
		}
	}
	return nil
}

// normalizeHost lowercases a Host header value and removes the port and a
// trailing dot, so "API.Example.com.:443" matches "api.example.com".
func normalizeHost(h string) string {
	// Without ':' or '[' there is no port and no IPv6 literal: skip
	// SplitHostPort, whose error for a bare name allocates.
	if strings.IndexByte(h, ':') >= 0 || strings.IndexByte(h, '[') >= 0 {
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
			h = h[1 : len(h)-1]
		}
	}
	h = strings.TrimSuffix(h, ".")
	return strings.ToLower(h)
}
