package egress

import (
	"net/netip"
	"strings"

	"github.com/ztgate/ztgate/configs"
)

// Reason is why a connection was denied (or "allowed"). The spellings are
// the reason field of decision records and the reason metric label.
type Reason string

// Reasons. Keep docs/egress.md's table in step.
const (
	ReasonAllowed          Reason = "allowed"
	ReasonNotAllowlisted   Reason = "not_allowlisted"
	ReasonDenyRule         Reason = "deny_rule"
	ReasonPublicResolver   Reason = "public_resolver"
	ReasonSNIMismatch      Reason = "sni_mismatch"
	ReasonNoSNI            Reason = "no_sni"
	ReasonECH              Reason = "ech"
	ReasonIPSNI            Reason = "ip_sni"
	ReasonInvalidName      Reason = "invalid_name"
	ReasonBadRequest       Reason = "bad_request"
	ReasonBadClientHello   Reason = "bad_client_hello"
	ReasonPeekTimeout      Reason = "client_hello_timeout"
	ReasonPrivate          Reason = "private_address"
	ReasonMetadata         Reason = "metadata_address"
	ReasonReserved         Reason = "reserved_address"
	ReasonDNSFailed        Reason = "dns_failed"
	ReasonDNSMismatch      Reason = "dns_mismatch"
	ReasonNotViaDNSGuard   Reason = "not_resolved_by_dns_guard"
	ReasonNoOriginalDst    Reason = "no_original_destination"
	ReasonConnLimit        Reason = "connection_limit"
	ReasonSourceLimit      Reason = "source_connection_limit"
	ReasonDialFailed       Reason = "dial_failed"
	ReasonShuttingDown     Reason = "shutting_down"
	ReasonClientTLSFailed  Reason = "client_tls_failed"
	ReasonUnsupportedProto Reason = "unsupported_request"
)

// target is what the client wants to reach, as facts gathered once.
type target struct {
	name string     // normalised DNS name, "" for an IP literal
	ip   netip.Addr // set for an IP literal (or a transparent no-SNI decision)
	port uint16
	tls  bool // the traffic is TLS (CONNECT peeked, transparent) or not (plain HTTP, tls:false tunnels)
}

// source is who is asking.
type source struct {
	addr     netip.Addr
	identity string // SPIFFE ID of an mTLS client, else ""
}

// decision is the outcome of the rule stage.
type decision struct {
	allow  bool
	rule   *rule // the rule that allowed or denied, nil for defaults
	reason Reason
}

// decisionName is the decision field's value.
func (d decision) decisionName() string {
	if d.allow {
		return "allow"
	}
	return "deny"
}

func (d decision) ruleName() string {
	if d.rule == nil {
		return ""
	}
	return d.rule.name
}

func (r *rule) matchSource(s source) bool {
	if r.anySrc {
		return true
	}
	for _, p := range r.groups {
		if p.Contains(s.addr) {
			return true
		}
	}
	if s.identity != "" {
		for _, id := range r.ids {
			if id == s.identity {
				return true
			}
		}
		for _, p := range r.idPrefix {
			if strings.HasPrefix(s.identity, p) {
				return true
			}
		}
	}
	return false
}

// matchName reports whether name matches an sni entry; exact says it
// matched by exact name rather than a wildcard.
func (r *rule) matchName(name string) (ok, exact bool) {
	if name == "" {
		return false, false
	}
	if r.exact[name] {
		return true, true
	}
	for _, s := range r.suffixes {
		if strings.HasSuffix(name, s) {
			return true, false
		}
	}
	return r.anyName, false
}

func (r *rule) matchIP(a netip.Addr) bool {
	for _, p := range r.cidrs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (r *rule) matchPort(p uint16) bool { return r.ports == nil || r.ports[p] }

func (r *rule) matchDest(t target) (ok, exact bool) {
	if t.name != "" {
		return r.matchName(t.name)
	}
	return t.ip.IsValid() && r.matchIP(t.ip), true
}

// decide runs the rule stage: DENY rules, then the public resolver list,
// then ALLOW rules; no match denies. The order matters: a DENY must win
// over any ALLOW, and the DoH/DoT list must win over wildcards.
func (rt *snapshot) decide(s source, t target) decision {
	for _, r := range rt.deny {
		if ok, _ := r.matchDest(t); ok && r.matchSource(s) && r.matchPort(t.port) {
			return decision{rule: r, reason: ReasonDenyRule}
		}
	}
	var wildcard *rule
	for _, r := range rt.allow {
		if r.tls != t.tls || !r.matchPort(t.port) || !r.matchSource(s) {
			continue
		}
		ok, exact := r.matchDest(t)
		if !ok {
			continue
		}
		if exact || !rt.publicResolver(t.name) {
			return decision{allow: true, rule: r, reason: ReasonAllowed}
		}
		if wildcard == nil {
			wildcard = r
		}
	}
	if wildcard != nil {
		return decision{rule: wildcard, reason: ReasonPublicResolver}
	}
	return decision{reason: ReasonNotAllowlisted}
}

// publicResolver reports whether name is on the DoH/DoT list, or below
// a listed name (NextDNS and others serve per-account subdomains).
func (rt *snapshot) publicResolver(name string) bool {
	if len(rt.resolvers) == 0 || name == "" {
		return false
	}
	for {
		if rt.resolvers[name] {
			return true
		}
		i := strings.IndexByte(name, '.')
		if i < 0 {
			return false
		}
		name = name[i+1:]
	}
}

// normalizeName is configs.NormalizeEgressName with a fast path for the
// common all-ASCII lower-case name.
func normalizeName(s string) (string, error) {
	s = strings.TrimSuffix(s, ".")
	if plainASCII(s) {
		return s, nil
	}
	return configs.NormalizeEgressName(s)
}

// plainASCII reports a name made of labels of [a-z0-9-] (1-63 bytes, no
// leading/trailing hyphen, no "xn--") that IDNA would leave unchanged.
func plainASCII(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			l := s[start:i]
			if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' || strings.HasPrefix(l, "xn--") {
				return false
			}
			start = i + 1
			continue
		}
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	// An all-numeric last label would be an IP-like name; let IDNA
	// and the IP check decide.
	last := s[strings.LastIndexByte(s, '.')+1:]
	return strings.Trim(last, "0123456789") != ""
}
