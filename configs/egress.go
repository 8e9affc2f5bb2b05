package configs

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/idna"
)

// Egress listener modes (egress.listeners[].mode).
const (
	EgressConnect     = "connect"     // HTTP CONNECT proxy
	EgressTransparent = "transparent" // TLS redirected by nftables REDIRECT (SO_ORIGINAL_DST)
	EgressHTTP        = "http"        // plain HTTP forward proxy (absolute-URI requests)
)

// Egress rule actions and ClientHello policies.
const (
	EgressAllow = "ALLOW"
	EgressDeny  = "DENY"

	HelloAllow = "allow"
	HelloDeny  = "deny"
)

// Egress configures the outbound proxy: who may reach which names, on
// which ports, through which listeners. An empty egress: section (no
// listeners) leaves the proxy off. Every key is applied by a reload
// (SIGHUP); a listener whose address is unchanged keeps its socket.
type Egress struct {
	// Listeners are the proxy's sockets, each in one mode.
	Listeners []EgressListener `mapstructure:"listeners" json:"listeners,omitempty"`
	// Groups name sets of client CIDRs that rules refer to in from.
	Groups []EgressGroup `mapstructure:"groups" json:"groups,omitempty"`
	// Rules decide. Default deny; a matching DENY rule wins over any ALLOW.
	Rules []EgressRule `mapstructure:"rules" json:"rules,omitempty"`

	// ClientHello is the policy for what the peeked ClientHello shows.
	ClientHello ClientHelloPolicy `mapstructure:"client_hello" json:"client_hello"`

	// PublicResolvers denies the built-in list of public DoH/DoT
	// endpoints even when a wildcard rule would allow them.
	PublicResolvers PublicResolvers `mapstructure:"public_resolvers" json:"public_resolvers"`

	// Resolver is the DNS server the proxy resolves names with when no
	// dnsguard is wired in. Empty uses the system resolver configuration.
	Resolver EgressResolver `mapstructure:"resolver" json:"resolver"`

	// RequireDNSGuard demands that the address dialled was handed to this
	// client by dnsguard for the same name (default false). Needs dnsguard.
	RequireDNSGuard bool `mapstructure:"require_dns_guard" json:"require_dns_guard"`

	Limits EgressLimits `mapstructure:"limits" json:"limits"`
}

// EgressListener is one egress socket.
type EgressListener struct {
	// Name appears in logs and metrics as the listener label.
	Name string `mapstructure:"name" json:"name"`
	// Mode is connect, transparent or http.
	Mode string `mapstructure:"mode" json:"mode"`
	// Address is host:port to listen on.
	Address string `mapstructure:"address" json:"address"`
	// MTLS makes clients connect over mTLS; the client certificate's
	// SPIFFE ID becomes the source identity (connect and http modes).
	MTLS *EgressMTLS `mapstructure:"mtls" json:"mtls,omitempty"`
}

// EgressMTLS names the files of an mTLS listener. The files are read at
// start and at each reload.
type EgressMTLS struct {
	Cert     string `mapstructure:"cert" json:"cert"`
	Key      string `mapstructure:"key" json:"key"`
	ClientCA string `mapstructure:"client_ca" json:"client_ca"`
}

// EgressGroup is a named set of client CIDRs.
type EgressGroup struct {
	Name  string   `mapstructure:"name" json:"name"`
	CIDRs []string `mapstructure:"cidrs" json:"cidrs"`
}

// EgressRule allows or denies connections from sources to names and ports.
type EgressRule struct {
	// Name appears in decision records as rule.
	Name string `mapstructure:"name" json:"name"`
	// Action is ALLOW (default) or DENY.
	Action string `mapstructure:"action" json:"action"`
	// From lists group names and SPIFFE IDs ("spiffe://..."; a trailing
	// "/*" matches a path prefix). Empty matches every source.
	From []string `mapstructure:"from" json:"from,omitempty"`
	// SNI lists names: exact ("api.example.com"), "*.example.com" (any
	// depth below example.com, not example.com itself) or "*" (any name).
	SNI []string `mapstructure:"sni" json:"sni,omitempty"`
	// CIDRs are destination prefixes this rule matches by address (IP
	// literals, transparent connections without SNI), and that it allows
	// even when the SSRF guard would deny them (private, loopback, ...).
	CIDRs []string `mapstructure:"cidrs" json:"cidrs,omitempty"`
	// Ports are destination ports (default [443], or [80] when tls is false).
	Ports []int `mapstructure:"ports" json:"ports,omitempty"`
	// TLS false says the traffic is not TLS: CONNECT tunnels are not
	// peeked for a ClientHello and plain HTTP forward requests match.
	TLS *bool `mapstructure:"tls" json:"tls,omitempty"`
}

// ClientHelloPolicy says what to do with unusual ClientHellos.
type ClientHelloPolicy struct {
	// NoSNI is deny (default) or allow. With allow, a CONNECT tunnel is
	// decided on its CONNECT host; a transparent connection on its
	// destination address against rules' cidrs.
	NoSNI string `mapstructure:"no_sni" json:"no_sni"`
	// ECH is deny (default) or allow (decide on the outer, public name).
	ECH string `mapstructure:"ech" json:"ech"`
	// Timeout bounds the wait for the whole ClientHello (default 10s).
	Timeout time.Duration `mapstructure:"timeout" json:"timeout"`
	// MaxBytes bounds the ClientHello read (default 16384, max 65536).
	MaxBytes int `mapstructure:"max_bytes" json:"max_bytes"`
}

// PublicResolvers controls the built-in DoH/DoT deny list.
type PublicResolvers struct {
	// Deny is true by default.
	Deny *bool `mapstructure:"deny" json:"deny,omitempty"`
	// Except lists names of the built-in list that rules may allow.
	Except []string `mapstructure:"except" json:"except,omitempty"`
}

// DenyEnabled reports whether the DoH/DoT list is enforced.
func (p PublicResolvers) DenyEnabled() bool { return p.Deny == nil || *p.Deny }

// EgressResolver is the fallback DNS resolver.
type EgressResolver struct {
	// Address is host:port of a DNS server; empty uses /etc/resolv.conf.
	Address string `mapstructure:"address" json:"address,omitempty"`
	// Timeout bounds one resolution (default 5s).
	Timeout time.Duration `mapstructure:"timeout" json:"timeout"`
}

// EgressLimits bound what clients can make the proxy hold.
type EgressLimits struct {
	// MaxConnections caps all proxied connections (default 10000).
	MaxConnections int `mapstructure:"max_connections" json:"max_connections"`
	// MaxConnectionsPerSource caps one client IP (default 256).
	MaxConnectionsPerSource int `mapstructure:"max_connections_per_source" json:"max_connections_per_source"`
	// HeaderTimeout bounds reading the CONNECT or HTTP request (default 10s).
	HeaderTimeout time.Duration `mapstructure:"header_timeout" json:"header_timeout"`
	// MaxHeaderBytes bounds the CONNECT or HTTP request head (default 16384).
	MaxHeaderBytes int `mapstructure:"max_header_bytes" json:"max_header_bytes"`
	// DialTimeout bounds the upstream dial (default 10s).
	DialTimeout time.Duration `mapstructure:"dial_timeout" json:"dial_timeout"`
	// IdleTimeout closes a tunnel with no data either way (default 5m).
	IdleTimeout time.Duration `mapstructure:"idle_timeout" json:"idle_timeout"`
	// MaxDuration closes any tunnel after this long (default 24h).
	MaxDuration time.Duration `mapstructure:"max_duration" json:"max_duration"`
}

// Enabled reports whether the egress proxy is configured at all.
func (e *Egress) Enabled() bool { return len(e.Listeners) > 0 }

// TLSOn reports whether the rule's traffic is TLS (default true).
func (r *EgressRule) TLSOn() bool { return r.TLS == nil || *r.TLS }

func (e *Egress) setDefaults() {
	if !e.Enabled() {
		return
	}
	for i := range e.Rules {
		r := &e.Rules[i]
		if r.Action == "" {
			r.Action = EgressAllow
		}
		if len(r.Ports) == 0 && r.Action == EgressAllow {
			if r.TLSOn() {
				r.Ports = []int{443}
			} else {
				r.Ports = []int{80}
			}
		}
	}
	h := &e.ClientHello
	if h.NoSNI == "" {
		h.NoSNI = HelloDeny
	}
	if h.ECH == "" {
		h.ECH = HelloDeny
	}
	if h.Timeout == 0 {
		h.Timeout = 10 * time.Second
	}
	if h.MaxBytes == 0 {
		h.MaxBytes = 16384
	}
	if e.Resolver.Timeout == 0 {
		e.Resolver.Timeout = 5 * time.Second
	}
	l := &e.Limits
	if l.MaxConnections == 0 {
		l.MaxConnections = 10000
	}
	if l.MaxConnectionsPerSource == 0 {
		l.MaxConnectionsPerSource = 256
	}
	if l.HeaderTimeout == 0 {
		l.HeaderTimeout = 10 * time.Second
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = 16384
	}
	if l.DialTimeout == 0 {
		l.DialTimeout = 10 * time.Second
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = 5 * time.Minute
	}
	if l.MaxDuration == 0 {
		l.MaxDuration = 24 * time.Hour
	}
}

func (e *Egress) validate(v *validator, c *Config) {
	if !e.Enabled() {
		if len(e.Rules) > 0 || len(e.Groups) > 0 {
			v.addf("listeners", "is empty, so the egress proxy is off and its rules do nothing (add a listener, e.g. {name: connect, mode: connect, address: \"127.0.0.1:3128\"})")
		}
		return
	}
	names := make([]string, len(e.Listeners))
	addrs := map[string]int{}
	for i := range e.Listeners {
		l := &e.Listeners[i]
		lv := v.index("listeners", i)
		names[i] = l.Name
		if l.Name == "" {
			lv.addf("name", "is required (a short name for logs and metrics, e.g. \"connect\")")
		}
		lv.oneOf("mode", l.Mode, EgressConnect, EgressTransparent, EgressHTTP)
		if l.Address == "" {
			lv.addf("address", "is required (e.g. \"127.0.0.1:3128\")")
		} else if lv.hostPort("address", l.Address) {
			if j, dup := addrs[l.Address]; dup && !strings.HasSuffix(l.Address, ":0") {
				lv.addf("address", "%q is already used by egress.listeners[%d]", l.Address, j)
			}
			addrs[l.Address] = i
			for j := range c.Listeners {
				if c.Listeners[j].Address == l.Address {
					lv.addf("address", "%q is already used by listeners[%d] (ingress)", l.Address, j)
				}
			}
		}
		if m := l.MTLS; m != nil {
			mv := lv.at("mtls")
			if l.Mode == EgressTransparent {
				mv.addf("", "is not possible in transparent mode (the client speaks TLS to the destination, not to the proxy); remove it")
			}
			mv.file("cert", m.Cert)
			mv.file("key", m.Key)
			mv.file("client_ca", m.ClientCA)
		}
	}
	v.unique("listeners", "egress listener", names)

	groups := make([]string, len(e.Groups))
	for i, g := range e.Groups {
		gv := v.index("groups", i)
		groups[i] = g.Name
		switch {
		case g.Name == "":
			gv.addf("name", "is required (rules refer to groups by name in from)")
		case strings.HasPrefix(g.Name, "spiffe://"):
			gv.addf("name", "%q must not start with spiffe:// (that is how from names a SPIFFE ID)", g.Name)
		}
		if len(g.CIDRs) == 0 {
			gv.addf("cidrs", "is empty (list client CIDRs, e.g. [10.1.0.0/16])")
		}
		for j, p := range g.CIDRs {
			gv.prefix(fmt.Sprintf("cidrs[%d]", j), p)
		}
	}
	v.unique("groups", "group", groups)

	ruleNames := make([]string, len(e.Rules))
	for i := range e.Rules {
		r := &e.Rules[i]
		rv := v.index("rules", i)
		ruleNames[i] = r.Name
		if r.Name == "" {
			rv.addf("name", "is required (it names the rule in decision records)")
		}
		rv.oneOf("action", r.Action, EgressAllow, EgressDeny)
		for j, f := range r.From {
			fk := fmt.Sprintf("from[%d]", j)
			if strings.HasPrefix(f, "spiffe://") {
				if err := CheckSPIFFEPattern(f); err != nil {
					rv.addf(fk, "%q %v", f, err)
				}
				continue
			}
			rv.reference(fk, "group", f, groups)
		}
		if len(r.SNI) == 0 && len(r.CIDRs) == 0 {
			rv.addf("sni", "is empty and so is cidrs: the rule matches nothing (list names, e.g. [\"*.example.com\"])")
		}
		for j, s := range r.SNI {
			if _, err := NormalizeEgressPattern(s); err != nil {
				rv.addf(fmt.Sprintf("sni[%d]", j), "%q %v", s, err)
			}
		}
		for j, p := range r.CIDRs {
			rv.prefix(fmt.Sprintf("cidrs[%d]", j), p)
		}
		for j, p := range r.Ports {
			if p < 1 || p > 65535 {
				rv.addf(fmt.Sprintf("ports[%d]", j), "%d is not a port (1-65535)", p)
			}
		}
	}
	v.unique("rules", "rule", ruleNames)

	h := e.ClientHello
	hv := v.at("client_hello")
	hv.oneOf("no_sni", h.NoSNI, HelloDeny, HelloAllow)
	hv.oneOf("ech", h.ECH, HelloDeny, HelloAllow)
	if h.Timeout < 0 {
		hv.addf("timeout", "%s must not be negative", h.Timeout)
	}
	if h.MaxBytes < 512 || h.MaxBytes > 65536 {
		hv.addf("max_bytes", "%d is out of range (512 to 65536)", h.MaxBytes)
	}
	for i, n := range e.PublicResolvers.Except {
		if _, err := NormalizeEgressName(n); err != nil {
			v.at("public_resolvers").addf(fmt.Sprintf("except[%d]", i), "%q %v", n, err)
		}
	}
	if e.Resolver.Address != "" {
		v.at("resolver").hostPort("address", e.Resolver.Address)
	}
	if e.Resolver.Timeout < 0 {
		v.at("resolver").addf("timeout", "%s must not be negative", e.Resolver.Timeout)
	}
	l := e.Limits
	lv := v.at("limits")
	if l.MaxConnections < 1 {
		lv.addf("max_connections", "%d must be at least 1", l.MaxConnections)
	}
	if l.MaxConnectionsPerSource < 1 {
		lv.addf("max_connections_per_source", "%d must be at least 1", l.MaxConnectionsPerSource)
	}
	if l.MaxHeaderBytes < 1024 || l.MaxHeaderBytes > 1<<20 {
		lv.addf("max_header_bytes", "%d is out of range (1024 to 1048576)", l.MaxHeaderBytes)
	}
	for key, d := range map[string]time.Duration{
		"header_timeout": l.HeaderTimeout, "dial_timeout": l.DialTimeout,
		"idle_timeout": l.IdleTimeout, "max_duration": l.MaxDuration,
	} {
		if d < 0 {
			lv.addf(key, "%s must not be negative", d)
		}
	}
}

// egressIDNA is UTS #46 lookup processing that also checks label and
// name lengths (so empty labels are refused).
var egressIDNA = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.VerifyDNSLength(true), idna.Transitional(false))

// NormalizeEgressName turns a DNS name into the form egress compares:
// IDNA (UTS #46) ASCII, lower case, without the trailing dot.
func NormalizeEgressName(s string) (string, error) {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return "", fmt.Errorf("is empty")
	}
	if _, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return "", fmt.Errorf("is an IP address, not a name (use cidrs for addresses)")
	}
	a, err := egressIDNA.ToASCII(s)
	if err != nil {
		return "", fmt.Errorf("is not a valid DNS name: %v", err)
	}
	a = strings.ToLower(a)
	if len(a) > 253 {
		return "", fmt.Errorf("is longer than 253 characters")
	}
	return a, nil
}

// NormalizeEgressPattern normalizes an sni pattern: "*", "*.suffix" or a name.
func NormalizeEgressPattern(s string) (string, error) {
	if s == "*" {
		return s, nil
	}
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		n, err := NormalizeEgressName(rest)
		if err != nil {
			return "", err
		}
		return "*." + n, nil
	}
	if strings.Contains(s, "*") {
		return "", fmt.Errorf("has a wildcard that is not a leading \"*.\" (use \"*.example.com\" or \"*\")")
	}
	return NormalizeEgressName(s)
}

// CheckSPIFFEPattern accepts spiffe://trust-domain/path, optionally
// ending in "/*" to match every ID below that path.
func CheckSPIFFEPattern(s string) error {
	rest := strings.TrimPrefix(s, "spiffe://")
	rest = strings.TrimSuffix(rest, "/*")
	td, _, _ := strings.Cut(rest, "/")
	if td == "" {
		return fmt.Errorf("has no trust domain (use spiffe://example.org/ns/default/sa/name)")
	}
	if strings.ContainsAny(rest, "*?# ") {
		return fmt.Errorf("may only end in \"/*\" (no other wildcards, spaces, ? or #)")
	}
	return nil
}
