package configs

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Route sends matching requests to an upstream or answers them directly.
//
// Routes are tried most specific first, not in file order: exact host
// before wildcard host before any host; then exact path, longest prefix,
// regex, no path; then routes with methods before routes without. Ties
// keep file order. So a route added during an incident (deny one exact
// path) wins over the broad route it carves out of.
type Route struct {
	Name  string `mapstructure:"name" json:"name"`
	Match Match  `mapstructure:"match" json:"match"`
	// Listeners limits the route to these listeners (default: all).
	Listeners []string `mapstructure:"listeners" json:"listeners,omitempty"`

	// Exactly one of Upstream and DirectResponse.
	Upstream       string          `mapstructure:"upstream" json:"upstream,omitempty"`
	DirectResponse *DirectResponse `mapstructure:"direct_response" json:"direct_response,omitempty"`

	// Timeout bounds the whole upstream exchange up to the response
	// headers (default: the upstream's response_timeout).
	Timeout time.Duration `mapstructure:"timeout" json:"timeout,omitempty"`

	// Policies are authz policy names attached to this route.
	Policies []string `mapstructure:"policies" json:"policies,omitempty"`
	// Labels select Istio-style policies (selector.matchLabels).
	Labels map[string]string `mapstructure:"labels" json:"labels,omitempty"`
	// PeerAuthentication overrides the listener's mode for this route
	// (only PERMISSIVE → STRICT-like checks are possible per route,
	// because the handshake already happened).
	PeerAuthentication string `mapstructure:"peer_authentication" json:"peer_authentication,omitempty"`

	// RequestHeaders edits the request sent upstream.
	RequestHeaders HeaderOps `mapstructure:"request_headers" json:"request_headers,omitempty"`
	// ResponseHeaders edits the response sent to the client.
	ResponseHeaders HeaderOps `mapstructure:"response_headers" json:"response_headers,omitempty"`
}

// Match selects requests. Every set field must match.
type Match struct {
	// Hosts: exact ("api.example.com") or wildcard ("*.example.com",
	// one or more labels). Empty matches any host.
	Hosts []string `mapstructure:"hosts" json:"hosts,omitempty"`
	// At most one of Path, PathPrefix and PathRegex.
	Path       string `mapstructure:"path" json:"path,omitempty"`
	PathPrefix string `mapstructure:"path_prefix" json:"path_prefix,omitempty"`
	// PathRegex is RE2 and must match the whole path.
	PathRegex string `mapstructure:"path_regex" json:"path_regex,omitempty"`
	// Methods: GET, POST, ... Empty matches any.
	Methods []string `mapstructure:"methods" json:"methods,omitempty"`
}

// DirectResponse answers from the gateway without an upstream.
type DirectResponse struct {
	Status int    `mapstructure:"status" json:"status"`
	Body   string `mapstructure:"body" json:"body,omitempty"`
	// ContentType defaults to text/plain; charset=utf-8.
	ContentType string `mapstructure:"content_type" json:"content_type,omitempty"`
}

// HeaderOps adds, sets or removes headers. Set and Add are lists of
// "Name: value" strings (a list, so header case survives YAML decoding).
type HeaderOps struct {
	Set    []string `mapstructure:"set" json:"set,omitempty"`
	Add    []string `mapstructure:"add" json:"add,omitempty"`
	Remove []string `mapstructure:"remove" json:"remove,omitempty"`
}

func (r *Route) setDefaults(i int) {
	if r.Name == "" {
		r.Name = fmt.Sprintf("route-%d", i)
	}
	if d := r.DirectResponse; d != nil && d.ContentType == "" {
		d.ContentType = "text/plain; charset=utf-8"
	}
	for j, m := range r.Match.Methods {
		r.Match.Methods[j] = strings.ToUpper(m)
	}
}

var knownMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace,
}

func (c *Config) validateRoutes(v *validator) {
	listeners := make([]string, len(c.Listeners))
	for i, l := range c.Listeners {
		listeners[i] = l.Name
	}
	upstreams := make([]string, len(c.Upstreams))
	for i, u := range c.Upstreams {
		upstreams[i] = u.Name
	}
	names := make([]string, len(c.Routes))
	policies := c.Authz.policyRefs()
	for i := range c.Routes {
		r := &c.Routes[i]
		names[i] = r.Name
		rv := v.index("routes", i)
		switch {
		case r.Upstream == "" && r.DirectResponse == nil:
			rv.addf("", "needs upstream or direct_response")
		case r.Upstream != "" && r.DirectResponse != nil:
			rv.addf("direct_response", "cannot be combined with upstream (choose one)")
		case r.Upstream != "":
			rv.reference("upstream", "upstream", r.Upstream, upstreams)
		}
		if d := r.DirectResponse; d != nil && (d.Status < 200 || d.Status > 599) {
			rv.addf("direct_response.status", "%d is not an HTTP status (200-599)", d.Status)
		}
		for j, l := range r.Listeners {
			rv.reference(fmt.Sprintf("listeners[%d]", j), "listener", l, listeners)
		}
		r.Match.validate(rv.at("match"))
		if r.Timeout < 0 {
			rv.addf("timeout", "%s must not be negative", r.Timeout)
		}
		for j, p := range r.Policies {
			policies.check(rv.at(fmt.Sprintf("policies[%d]", j)), p)
		}
		if r.PeerAuthentication != "" {
			rv.oneOf("peer_authentication", r.PeerAuthentication, PeerStrict, PeerPermissive, PeerDisable)
		}
		r.RequestHeaders.validate(rv.at("request_headers"))
		r.ResponseHeaders.validate(rv.at("response_headers"))
	}
	v.unique("routes", "route", names)
}

func (m *Match) validate(v *validator) {
	set := 0
	for _, s := range []string{m.Path, m.PathPrefix, m.PathRegex} {
		if s != "" {
			set++
		}
	}
	if set > 1 {
		v.addf("", "sets more than one of path, path_prefix, path_regex (use one)")
	}
	if m.Path != "" && !strings.HasPrefix(m.Path, "/") {
		v.addf("path", "%q must start with /", m.Path)
	}
	if m.PathPrefix != "" && !strings.HasPrefix(m.PathPrefix, "/") {
		v.addf("path_prefix", "%q must start with /", m.PathPrefix)
	}
	if m.PathRegex != "" {
		v.regex("path_regex", m.PathRegex)
	}
	for i, h := range m.Hosts {
		if h == "*" {
			continue
		}
		if err := checkServerName(h); err != nil {
			v.addf(fmt.Sprintf("hosts[%d]", i), "%q %v", h, err)
		}
		if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
			v.addf(fmt.Sprintf("hosts[%d]", i), "%q must not contain a port (ports are matched by listener)", h)
		}
	}
	for i, meth := range m.Methods {
		v.oneOf(fmt.Sprintf("methods[%d]", i), meth, knownMethods...)
	}
}

func (h *HeaderOps) validate(v *validator) {
	for _, list := range []struct {
		key  string
		vals []string
	}{{"set", h.Set}, {"add", h.Add}} {
		for i, s := range list.vals {
			name, _, ok := strings.Cut(s, ":")
			if !ok || !validHeaderName(strings.TrimSpace(name)) {
				v.addf(fmt.Sprintf("%s[%d]", list.key, i), "%q must be \"Header-Name: value\"", s)
			}
		}
	}
	for i, name := range h.Remove {
		if !validHeaderName(name) {
			v.addf(fmt.Sprintf("remove[%d]", i), "%q is not a header name", name)
		}
	}
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r) {
			return false
		}
	}
	return true
}
