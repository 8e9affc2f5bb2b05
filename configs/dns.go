package configs

import (
	"fmt"
	"strings"
	"time"
)

// DNS configures dnsguard, the DNS proxy that workloads use as their only
// resolver. An empty dns: section (no listen address) turns dnsguard off.
// Every key is applied on reload (SIGHUP); the cache and the per-client
// state survive a reload.
type DNS struct {
	// Listen are the addresses to serve on, UDP and TCP on the same port
	// (e.g. "127.0.0.1:53"). Empty disables dnsguard. Reload opens a new
	// address before it closes a removed one.
	Listen []string `mapstructure:"listen" json:"listen,omitempty"`

	// Upstreams are the resolvers to forward to, tried in order of health.
	Upstreams []DNSUpstream `mapstructure:"upstreams" json:"upstreams,omitempty"`

	// Timeout bounds one exchange with one upstream. Default 2s.
	Timeout time.Duration `mapstructure:"timeout" json:"timeout"`
	// Attempts is how many upstreams a query is tried on. Default 3.
	Attempts int `mapstructure:"attempts" json:"attempts"`
	// UDPSize is the EDNS0 buffer size advertised to clients and
	// upstreams. Default 1232 (DNS flag day 2020).
	UDPSize int `mapstructure:"udp_size" json:"udp_size"`
	// ECS is "strip" (default: remove EDNS Client Subnet towards
	// upstreams) or "pass".
	ECS string `mapstructure:"ecs" json:"ecs"`
	// BlockResponse is the rcode for a blocked name: NXDOMAIN (default)
	// or REFUSED.
	BlockResponse string `mapstructure:"block_response" json:"block_response"`

	Cache     DNSCache     `mapstructure:"cache" json:"cache"`
	Groups    []DNSGroup   `mapstructure:"groups" json:"groups,omitempty"`
	RateLimit DNSRateLimit `mapstructure:"rate_limit" json:"rate_limit"`
	Tunneling DNSTunneling `mapstructure:"tunneling" json:"tunneling"`
	Resolved  DNSResolved  `mapstructure:"resolved" json:"resolved"`
}

// DNSUpstream is one upstream resolver.
type DNSUpstream struct {
	// Address is host:port; the port defaults to 53 (853 for tls).
	Address string `mapstructure:"address" json:"address"`
	// Protocol is udp (default; TCP on truncation), tcp or tls (DoT).
	Protocol string `mapstructure:"protocol" json:"protocol"`
	// ServerName is the name checked in a DoT server's certificate
	// (default: the host of Address).
	ServerName string `mapstructure:"server_name" json:"server_name,omitempty"`
	// Zones limits this upstream to names under these zones (conditional
	// forwarding). Empty means every name not claimed by another
	// upstream's zones. The most specific zone wins.
	Zones []string `mapstructure:"zones" json:"zones,omitempty"`
}

// DNSCache bounds the answer cache.
type DNSCache struct {
	// MaxEntries caps the number of cached answers. Default 100000; 0
	// keeps the default, -1 disables the cache.
	MaxEntries int `mapstructure:"max_entries" json:"max_entries"`
	// MinTTL and MaxTTL clamp positive answers. Defaults 0s and 24h.
	MinTTL time.Duration `mapstructure:"min_ttl" json:"min_ttl"`
	MaxTTL time.Duration `mapstructure:"max_ttl" json:"max_ttl"`
	// NegativeTTL caps NXDOMAIN/NODATA caching (RFC 2308). Default 5m.
	NegativeTTL time.Duration `mapstructure:"negative_ttl" json:"negative_ttl"`
	// ServeStale answers from expired entries (TTL 30) when every
	// upstream fails, for up to StaleFor past expiry. Default off, 1h.
	ServeStale bool          `mapstructure:"serve_stale" json:"serve_stale"`
	StaleFor   time.Duration `mapstructure:"stale_for" json:"stale_for"`
}

// DNSGroup is a policy for the clients in some CIDRs. The first group
// whose clients contain the source address applies; a group with no
// clients matches everyone.
type DNSGroup struct {
	Name    string   `mapstructure:"name" json:"name"`
	Clients []string `mapstructure:"clients" json:"clients,omitempty"`
	// Allow and Deny are names: "example.com" (exactly that name) or
	// "*.example.com" (every name below it). The most specific match
	// wins; on a tie deny wins.
	Allow []string `mapstructure:"allow" json:"allow,omitempty"`
	Deny  []string `mapstructure:"deny" json:"deny,omitempty"`
	// AllowFiles and DenyFiles hold more entries, one per line (# starts
	// a comment; hosts-file lines "0.0.0.0 name" are accepted). Re-read
	// on every reload.
	AllowFiles []string `mapstructure:"allow_files" json:"allow_files,omitempty"`
	DenyFiles  []string `mapstructure:"deny_files" json:"deny_files,omitempty"`
	// AllowlistOnly blocks every name that no allow entry matches.
	AllowlistOnly bool `mapstructure:"allowlist_only" json:"allowlist_only"`
}

// DNSRateLimit is a per-client token bucket.
type DNSRateLimit struct {
	// QPS is the sustained queries per second per client address.
	// Default 200; -1 disables the limit.
	QPS float64 `mapstructure:"qps" json:"qps"`
	// Burst is the bucket size. Default 2×QPS.
	Burst int `mapstructure:"burst" json:"burst"`
	// MaxClients caps the tracked clients (LRU). Default 65536.
	MaxClients int `mapstructure:"max_clients" json:"max_clients"`
}

// Tunneling modes.
const (
	TunnelBlock  = "block"
	TunnelReport = "report"
	TunnelOff    = "off"
)

// DNSTunneling configures the tunnel and exfiltration detector. The
// defaults are the documented "default" profile (docs/dns.md).
type DNSTunneling struct {
	// Mode is block (default), report (log what would be blocked) or off.
	Mode string `mapstructure:"mode" json:"mode"`
	// QueryScore is the per-query score at which a query counts as
	// suspicious. Default 4.
	QueryScore int `mapstructure:"query_score" json:"query_score"`
	// InstantScore blocks the pair on one query this suspicious. Default 8.
	InstantScore int `mapstructure:"instant_score" json:"instant_score"`
	// SuspiciousQueries and SuspiciousBytes judge a (client, registered
	// domain) pair a tunnel once its suspicious queries, or the name
	// bytes they carried, reach these within Window. Defaults 6, 768.
	SuspiciousQueries int `mapstructure:"suspicious_queries" json:"suspicious_queries"`
	SuspiciousBytes   int `mapstructure:"suspicious_bytes" json:"suspicious_bytes"`
	// DistinctSubdomains and NameBytes judge a pair a tunnel on volume
	// alone (low-entropy tunnels) within Window: distinct subdomains, and
	// bytes of subdomains new to the window. Defaults 400, 16384.
	DistinctSubdomains int `mapstructure:"distinct_subdomains" json:"distinct_subdomains"`
	NameBytes          int `mapstructure:"name_bytes" json:"name_bytes"`
	// Window is the sliding window for the per-pair counters. Default 60s.
	Window time.Duration `mapstructure:"window" json:"window"`
	// Quarantine is how long every query from the client to a judged
	// domain is blocked. Default 15m.
	Quarantine time.Duration `mapstructure:"quarantine" json:"quarantine"`
	// RefuseTypes are query types answered REFUSED outright. Default
	// NULL, KEY and PRIVATE (65280-65534). "none" refuses nothing.
	RefuseTypes []string `mapstructure:"refuse_types" json:"refuse_types,omitempty"`
	// Exempt are extra zones (suffixes) never scored, added to the
	// built-in list of DNSBL and reputation zones.
	Exempt []string `mapstructure:"exempt" json:"exempt,omitempty"`
	// NoDefaultExempt drops the built-in exempt zones.
	NoDefaultExempt bool `mapstructure:"no_default_exempt" json:"no_default_exempt"`
	// MaxTracked caps the (client, domain) pairs tracked. Default 100000.
	MaxTracked int `mapstructure:"max_tracked" json:"max_tracked"`
}

// DNSResolved configures the table of answers handed to clients, which
// egress consults (toFQDNs-style).
type DNSResolved struct {
	// Grace is added to each answer's TTL. Default 60s.
	Grace time.Duration `mapstructure:"grace" json:"grace"`
	// MaxEntries caps the (client, name) entries. Default 200000.
	MaxEntries int `mapstructure:"max_entries" json:"max_entries"`
}

// Enabled reports whether dnsguard should run: some listen address is set.
func (d *DNS) Enabled() bool { return len(d.Listen) > 0 }

func (d *DNS) setDefaults() {
	if !d.Enabled() {
		return
	}
	def := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	defInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&d.Timeout, 2*time.Second)
	defInt(&d.Attempts, 3)
	defInt(&d.UDPSize, 1232)
	if d.ECS == "" {
		d.ECS = "strip"
	}
	if d.BlockResponse == "" {
		d.BlockResponse = "NXDOMAIN"
	}
	d.BlockResponse = strings.ToUpper(d.BlockResponse)
	for i := range d.Upstreams {
		u := &d.Upstreams[i]
		if u.Protocol == "" {
			u.Protocol = "udp"
		}
	}
	defInt(&d.Cache.MaxEntries, 100000)
	def(&d.Cache.MaxTTL, 24*time.Hour)
	def(&d.Cache.NegativeTTL, 5*time.Minute)
	def(&d.Cache.StaleFor, time.Hour)
	if d.RateLimit.QPS == 0 {
		d.RateLimit.QPS = 200
	}
	if d.RateLimit.Burst == 0 && d.RateLimit.QPS > 0 {
		d.RateLimit.Burst = int(2 * d.RateLimit.QPS)
		if d.RateLimit.Burst < 1 {
			d.RateLimit.Burst = 1
		}
	}
	defInt(&d.RateLimit.MaxClients, 65536)
	t := &d.Tunneling
	if t.Mode == "" {
		t.Mode = TunnelBlock
	}
	defInt(&t.QueryScore, 4)
	defInt(&t.InstantScore, 8)
	defInt(&t.SuspiciousQueries, 6)
	defInt(&t.SuspiciousBytes, 768)
	defInt(&t.DistinctSubdomains, 400)
	defInt(&t.NameBytes, 16384)
	def(&t.Window, time.Minute)
	def(&t.Quarantine, 15*time.Minute)
	if len(t.RefuseTypes) == 0 {
		t.RefuseTypes = []string{"NULL", "KEY", "PRIVATE"}
	}
	defInt(&t.MaxTracked, 100000)
	def(&d.Resolved.Grace, time.Minute)
	defInt(&d.Resolved.MaxEntries, 200000)
}

func (d *DNS) validate(v *validator, c *Config) {
	if !d.Enabled() {
		return
	}
	seen := map[string]int{}
	for i, a := range d.Listen {
		key := fmt.Sprintf("listen[%d]", i)
		if v.hostPort(key, a) {
			if j, dup := seen[a]; dup {
				v.addf(key, "%q is already listed at listen[%d]", a, j)
			}
			seen[a] = i
		}
	}
	if len(d.Upstreams) == 0 {
		v.addf("upstreams", "must list at least one resolver to forward to (e.g. - address: 10.0.0.2:53)")
	}
	for i := range d.Upstreams {
		u := &d.Upstreams[i]
		uv := v.index("upstreams", i)
		if u.Address == "" {
			uv.addf("address", "must be host:port of a resolver (e.g. 10.0.0.2:53)")
		} else {
			uv.hostPort("address", u.Address)
		}
		uv.oneOf("protocol", u.Protocol, "udp", "tcp", "tls")
		if u.ServerName != "" && u.Protocol != "tls" {
			uv.addf("server_name", "only applies with protocol: tls (protocol is %q)", u.Protocol)
		}
		for j, z := range u.Zones {
			if err := CheckDNSName(z); err != nil {
				uv.addf(fmt.Sprintf("zones[%d]", j), "%q: %v", z, err)
			}
		}
	}
	if d.Timeout < 0 {
		v.addf("timeout", "%s must be positive", d.Timeout)
	}
	if d.Attempts < 1 || d.Attempts > 10 {
		v.addf("attempts", "%d is out of range (use 1-10)", d.Attempts)
	}
	if d.UDPSize < 512 || d.UDPSize > 4096 {
		v.addf("udp_size", "%d is out of range (use 512-4096; 1232 is the safe default)", d.UDPSize)
	}
	v.oneOf("ecs", d.ECS, "strip", "pass")
	v.oneOf("block_response", d.BlockResponse, "NXDOMAIN", "REFUSED")

	cv := v.at("cache")
	if d.Cache.MaxEntries < -1 {
		cv.addf("max_entries", "%d is not valid (use a positive cap, or -1 to disable the cache)", d.Cache.MaxEntries)
	}
	for _, x := range []struct {
		k string
		d time.Duration
	}{{"min_ttl", d.Cache.MinTTL}, {"max_ttl", d.Cache.MaxTTL}, {"negative_ttl", d.Cache.NegativeTTL}, {"stale_for", d.Cache.StaleFor}} {
		if x.d < 0 {
			cv.addf(x.k, "%s must not be negative", x.d)
		}
	}
	if d.Cache.MinTTL > d.Cache.MaxTTL {
		cv.addf("min_ttl", "%s is above max_ttl %s", d.Cache.MinTTL, d.Cache.MaxTTL)
	}

	names := make([]string, len(d.Groups))
	for i := range d.Groups {
		g := &d.Groups[i]
		names[i] = g.Name
		gv := v.index("groups", i)
		if g.Name == "" {
			gv.addf("name", "must be set (it names the group in logs and metrics)")
		}
		for j, cidr := range g.Clients {
			gv.prefix(fmt.Sprintf("clients[%d]", j), cidr)
		}
		for _, l := range []struct {
			k    string
			list []string
		}{{"allow", g.Allow}, {"deny", g.Deny}} {
			for j, p := range l.list {
				if err := CheckDNSPattern(p); err != nil {
					gv.addf(fmt.Sprintf("%s[%d]", l.k, j), "%q: %v", p, err)
				}
			}
		}
		for j, f := range g.AllowFiles {
			gv.file(fmt.Sprintf("allow_files[%d]", j), f)
		}
		for j, f := range g.DenyFiles {
			gv.file(fmt.Sprintf("deny_files[%d]", j), f)
		}
		if g.AllowlistOnly && len(g.Allow) == 0 && len(g.AllowFiles) == 0 {
			gv.addf("allowlist_only", "is set but the group allows nothing (add allow or allow_files entries)")
		}
	}
	v.unique("groups", "group", names)

	rv := v.at("rate_limit")
	if d.RateLimit.QPS < 0 && d.RateLimit.QPS != -1 {
		rv.addf("qps", "%v is not valid (use a positive rate, or -1 to disable)", d.RateLimit.QPS)
	}
	if d.RateLimit.QPS > 0 && d.RateLimit.Burst < 1 {
		rv.addf("burst", "%d is not valid (use at least 1)", d.RateLimit.Burst)
	}
	if d.RateLimit.MaxClients < 1 {
		rv.addf("max_clients", "%d is not valid (use at least 1)", d.RateLimit.MaxClients)
	}

	t := &d.Tunneling
	tv := v.at("tunneling")
	tv.oneOf("mode", t.Mode, TunnelBlock, TunnelReport, TunnelOff)
	for _, x := range []struct {
		k string
		n int
	}{{"query_score", t.QueryScore}, {"instant_score", t.InstantScore}, {"suspicious_queries", t.SuspiciousQueries},
		{"suspicious_bytes", t.SuspiciousBytes}, {"distinct_subdomains", t.DistinctSubdomains}, {"name_bytes", t.NameBytes}, {"max_tracked", t.MaxTracked}} {
		if x.n < 1 {
			tv.addf(x.k, "%d is not valid (use a positive number)", x.n)
		}
	}
	if t.Window <= 0 {
		tv.addf("window", "%s must be positive", t.Window)
	}
	if t.Quarantine <= 0 {
		tv.addf("quarantine", "%s must be positive", t.Quarantine)
	}
	for j, q := range t.RefuseTypes {
		if q == "" {
			tv.addf(fmt.Sprintf("refuse_types[%d]", j), "is empty: YAML reads an unquoted NULL as null, write \"NULL\" in quotes")
			continue
		}
		if _, ok := parseRefuseType(q); !ok {
			tv.addf(fmt.Sprintf("refuse_types[%d]", j), "%q is not a query type (use e.g. NULL, KEY, PRIVATE, ANY, TYPE65399, or none)", q)
		}
	}
	for j, z := range t.Exempt {
		if err := CheckDNSName(strings.TrimPrefix(z, "*.")); err != nil {
			tv.addf(fmt.Sprintf("exempt[%d]", j), "%q: %v", z, err)
		}
	}
	rsv := v.at("resolved")
	if d.Resolved.Grace < 0 {
		rsv.addf("grace", "%s must not be negative", d.Resolved.Grace)
	}
	if d.Resolved.MaxEntries < 1 {
		rsv.addf("max_entries", "%d is not valid (use at least 1)", d.Resolved.MaxEntries)
	}
}

// dnsTypeNames are the query type mnemonics refuse_types accepts besides
// TYPEnnn, PRIVATE and none. dnsguard maps them to numbers.
var dnsTypeNames = map[string]uint16{
	"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "NULL": 10, "PTR": 12, "HINFO": 13, "MX": 15, "TXT": 16,
	"KEY": 25, "AAAA": 28, "SRV": 33, "NAPTR": 35, "OPT": 41, "DS": 43, "RRSIG": 46, "DNSKEY": 48,
	"TLSA": 52, "SVCB": 64, "HTTPS": 65, "AXFR": 252, "IXFR": 251, "ANY": 255, "CAA": 257,
}

// DNSRefuseType parses one refuse_types entry into the types it covers:
// a mnemonic, TYPEnnn, PRIVATE (65280-65534) or none.
func DNSRefuseType(s string) (lo, hi uint16, ok bool) {
	r, ok := parseRefuseType(s)
	return r[0], r[1], ok
}

func parseRefuseType(s string) ([2]uint16, bool) {
	u := strings.ToUpper(strings.TrimSpace(s))
	switch {
	case u == "NONE":
		return [2]uint16{0, 0}, true
	case u == "PRIVATE":
		return [2]uint16{65280, 65534}, true
	case strings.HasPrefix(u, "TYPE"):
		var n int
		if _, err := fmt.Sscanf(u[4:], "%d", &n); err != nil || n < 1 || n > 65535 || fmt.Sprint(n) != u[4:] {
			return [2]uint16{}, false
		}
		return [2]uint16{uint16(n), uint16(n)}, true
	}
	n, ok := dnsTypeNames[u]
	return [2]uint16{n, n}, ok
}

// CheckDNSName checks a domain name as written in the config: labels of
// 1-63 letters, digits, '-' or '_', at most 253 characters, no trailing
// dot needed.
func CheckDNSName(s string) error {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return fmt.Errorf("is empty (write a domain such as example.com)")
	}
	if len(s) > 253 {
		return fmt.Errorf("is longer than 253 characters")
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("has an empty or over-long label (labels are 1-63 characters)")
		}
		for i := 0; i < len(l); i++ {
			b := l[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
				return fmt.Errorf("has %q, which is not allowed in a name (use letters, digits, '-', '_'; punycode for IDNs)", b)
			}
		}
	}
	return nil
}

// CheckDNSPattern checks an allow/deny entry: a name, or "*." and a name.
func CheckDNSPattern(s string) error {
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		return CheckDNSName(rest)
	}
	if strings.Contains(s, "*") {
		return fmt.Errorf("a wildcard is only allowed as the first label (\"*.example.com\")")
	}
	return CheckDNSName(s)
}
