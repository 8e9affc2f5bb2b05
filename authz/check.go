package authz

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/ztgate/ztgate/configs"
)

// CheckRequest is what `ztgate policy check` is told about a request.
type CheckRequest struct {
	Method string // default GET
	// Path may include "?query".
	Path string // default /
	Host string
	// Headers are "Name: value" strings, as curl's -H.
	Headers []string
	// Source is the direct peer IP (default 127.0.0.1).
	Source string
	// Remote is the client IP behind trusted proxies (default: Source,
	// or the first X-Forwarded-For entry when a header gives one).
	Remote string
	// Peer is the client certificate's SPIFFE ID.
	Peer string
	// Port is the destination port (default: the listener's port).
	Port int
	SNI  string
	// Listener and Route force the names; by default the route is chosen
	// as the gateway does (most specific first) and the listener is the
	// first the route serves.
	Listener string
	Route    string
	// RequestID defaults to "policy-check".
	RequestID string
}

// JWTIdentity is what authn extracts from a verified token.
type JWTIdentity struct {
	Principal string // iss + "/" + sub
	Claims    map[string]any
	Audiences []string
	Presenter string
}

// JWTVerifier verifies the request's token(s) as the gateway would for
// route. It returns (nil, nil) without a token and an error for an
// invalid one (the gateway answers 401).
type JWTVerifier func(ctx context.Context, route string, headers map[string][]string) (*JWTIdentity, error)

// CheckAttributes builds the Attributes for req against cfg.
func CheckAttributes(cfg *configs.Config, req CheckRequest) (*Attributes, error) {
	a := &Attributes{Method: strings.ToUpper(req.Method), Host: req.Host, Headers: map[string][]string{},
		SNI: req.SNI, RequestID: req.RequestID, Protocol: "HTTP/1.1"}
	if a.Method == "" {
		a.Method = "GET"
	}
	if a.RequestID == "" {
		a.RequestID = "policy-check"
	}
	path := req.Path
	if path == "" {
		path = "/"
	}
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("--path %q must start with /", path)
	}
	a.Path, a.RawQuery, _ = strings.Cut(path, "?")
	for _, h := range req.Headers {
		name, val, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("--header %q must be \"Name: value\"", h)
		}
		n := strings.ToLower(strings.TrimSpace(name))
		a.Headers[n] = append(a.Headers[n], strings.TrimSpace(val))
	}
	if a.Host == "" {
		a.Host = a.Header("host")
	}
	if a.SNI == "" {
		if h, _, ok := cutPort(a.Host); ok {
			a.SNI = h
		} else {
			a.SNI = a.Host
		}
	}
	src := req.Source
	if src == "" {
		src = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(src)
	if err != nil {
		return nil, fmt.Errorf("--source %q is not an IP address", src)
	}
	a.SourceIP = ip
	remote := req.Remote
	if remote == "" {
		if xff := a.Header("x-forwarded-for"); xff != "" {
			remote = strings.TrimSpace(strings.Split(xff, ",")[0])
		}
	}
	if remote != "" {
		if a.RemoteIP, err = netip.ParseAddr(remote); err != nil {
			return nil, fmt.Errorf("remote address %q is not an IP address", remote)
		}
	}
	if req.Peer != "" {
		if err := configs.CheckSPIFFEID(req.Peer); err != nil {
			return nil, fmt.Errorf("--peer %q %v", req.Peer, err)
		}
		a.Peer = PeerFromSPIFFEID(req.Peer)
	}
	a.Route, a.Listener = req.Route, req.Listener
	if a.Route == "" {
		a.Route = pickRoute(cfg, a.Host, a.Path, a.Method)
	}
	var route *configs.Route
	for i := range cfg.Routes {
		if cfg.Routes[i].Name == a.Route {
			route = &cfg.Routes[i]
		}
	}
	if route == nil && a.Route != "" {
		return nil, fmt.Errorf("route %q is not defined", a.Route)
	}
	if route != nil {
		a.RouteLabels = route.Labels
	}
	if a.Listener == "" {
		for _, l := range cfg.Listeners {
			if l.RedirectHTTPS != nil {
				continue
			}
			if route == nil || len(route.Listeners) == 0 || contains(route.Listeners, l.Name) {
				a.Listener = l.Name
				break
			}
		}
	}
	a.DestinationPort = req.Port
	if l, ok := cfg.Listener(a.Listener); ok && a.DestinationPort == 0 {
		if _, p, err := net.SplitHostPort(l.Address); err == nil {
			a.DestinationPort, _ = strconv.Atoi(p)
		}
	}
	return a, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// pickRoute chooses the route as the gateway documents it (configs.Route):
// exact host, wildcard host, any host; then exact path, longest prefix,
// regex, none; then routes with methods first; ties keep file order.
func pickRoute(cfg *configs.Config, host, path, method string) string {
	h := strings.ToLower(host)
	if hh, _, ok := cutPort(h); ok {
		h = hh
	}
	type cand struct {
		name                   string
		hostRank, pathRank, mr int
		plen, idx              int
	}
	var cs []cand
	for i, r := range cfg.Routes {
		m := r.Match
		c := cand{name: r.Name, idx: i, hostRank: 2, pathRank: 3, mr: 1}
		if len(m.Hosts) > 0 {
			ok := false
			for _, mh := range m.Hosts {
				mh = strings.ToLower(mh)
				switch {
				case mh == h:
					ok, c.hostRank = true, 0
				case mh == "*":
					ok = true
				case strings.HasPrefix(mh, "*.") && strings.HasSuffix(h, mh[1:]):
					ok, c.hostRank = true, min(c.hostRank, 1)
				}
			}
			if !ok {
				continue
			}
		}
		switch {
		case m.Path != "":
			if path != m.Path {
				continue
			}
			c.pathRank = 0
		case m.PathPrefix != "":
			if !strings.HasPrefix(path, m.PathPrefix) {
				continue
			}
			c.pathRank, c.plen = 1, len(m.PathPrefix)
		case m.PathRegex != "":
			re, err := regexp.Compile("^(?:" + m.PathRegex + ")$")
			if err != nil || !re.MatchString(path) {
				continue
			}
			c.pathRank = 2
		}
		if len(m.Methods) > 0 {
			if !contains(m.Methods, method) {
				continue
			}
			c.mr = 0
		}
		cs = append(cs, c)
	}
	sort.SliceStable(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if a.hostRank != b.hostRank {
			return a.hostRank < b.hostRank
		}
		if a.pathRank != b.pathRank {
			return a.pathRank < b.pathRank
		}
		if a.plen != b.plen {
			return a.plen > b.plen
		}
		if a.mr != b.mr {
			return a.mr < b.mr
		}
		return a.idx < b.idx
	})
	if len(cs) == 0 {
		return ""
	}
	return cs[0].name
}

// Check is the library side of `ztgate policy check`: it compiles cfg
// exactly as a reload would (New with deps), builds the attributes from
// req, verifies a token through verify (optional), decides, prints the
// decision with the policy, rule and reasons to out, and reports whether
// the request is allowed. err is for a bad config or bad flags; an
// invalid token is a deny (the gateway's 401), not an error.
func Check(ctx context.Context, cfg *configs.Config, deps Deps, req CheckRequest, verify JWTVerifier, out io.Writer) (bool, error) {
	e, err := New(cfg, deps)
	if err != nil {
		return false, err
	}
	a, err := CheckAttributes(cfg, req)
	if err != nil {
		return false, err
	}
	fmt.Fprintf(out, "request:  %s %s", a.Method, a.Path)
	if a.RawQuery != "" {
		fmt.Fprintf(out, "?%s", a.RawQuery)
	}
	fmt.Fprintf(out, " host=%q listener=%q route=%q port=%d source=%s", a.Host, a.Listener, a.Route, a.DestinationPort, a.SourceIP)
	if a.RemoteIP.IsValid() {
		fmt.Fprintf(out, " remote=%s", a.RemoteIP)
	}
	if a.Peer.Principal != "" {
		fmt.Fprintf(out, " peer=%s", a.Peer.Principal)
	}
	fmt.Fprintln(out)
	if verify != nil {
		id, err := verify(ctx, a.Route, a.Headers)
		if err != nil {
			fmt.Fprintf(out, "decision: DENY (status 401)\nreason:   authn: the token was rejected: %v\n", err)
			return false, nil
		}
		if id != nil {
			a.RequestPrincipal, a.Claims, a.Audiences, a.Presenter = id.Principal, id.Claims, id.Audiences, id.Presenter
			fmt.Fprintf(out, "token:    valid, request principal %s\n", id.Principal)
		} else {
			fmt.Fprintln(out, "token:    none")
		}
	} else if a.Header("authorization") != "" {
		fmt.Fprintln(out, "token:    not verified (no JWT verifier wired): request principal and claims are empty")
	}
	d := e.DecideExplain(ctx, a)
	fmt.Fprint(out, d.Explain())
	return d.Allowed, nil
}
