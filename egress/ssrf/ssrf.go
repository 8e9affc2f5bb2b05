// Package ssrf classifies destination addresses for the egress SSRF
// guard: public, or one of the kinds a workload must not reach through
// the proxy unless a rule names the address explicitly (loopback,
// private, link-local, CGNAT, multicast, cloud metadata, ...).
//
// It classifies the address that will actually be dialled, including
// IPv4 addresses embedded in IPv6 (mapped, compatible, NAT64, 6to4).
// It knows nothing of names, DNS or policy.
package ssrf

import "net/netip"

// Class is the kind of a destination address.
type Class uint8

// Address classes. String returns the spelling used in logs.
const (
	Public Class = iota
	Loopback
	Private // RFC 1918, IPv6 ULA
	LinkLocal
	CGNAT // RFC 6598 shared address space
	Multicast
	Metadata // cloud instance metadata endpoints
	Unspecified
	Reserved // this-network, benchmarking, documentation, 240/4, broadcast, Teredo, ...
	Invalid
)

var classNames = [...]string{"public", "loopback", "private", "link_local", "cgnat", "multicast", "metadata", "unspecified", "reserved", "invalid"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "invalid"
}

// Reason is the deny reason recorded for a class: metadata_address,
// private_address (loopback, private, link-local, CGNAT) or
// reserved_address (everything else that is not public); "" for Public.
func (c Class) Reason() string {
	switch c {
	case Public:
		return ""
	case Metadata:
		return "metadata_address"
	case Loopback, Private, LinkLocal, CGNAT:
		return "private_address"
	default:
		return "reserved_address"
	}
}

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

var (
	// metadata are cloud instance metadata and host-agent endpoints.
	// They are checked before the ranges that contain them.
	metadata = mustPrefixes(
		"169.254.169.254/32", // AWS, GCP, Azure, OpenStack, DigitalOcean, ...
		"169.254.170.2/32",   // AWS ECS task metadata
		"169.254.169.123/32", // AWS time sync
		"100.100.100.200/32", // Alibaba Cloud
		"168.63.129.16/32",   // Azure WireServer (a public address)
		"fd00:ec2::254/128",  // AWS IMDS over IPv6
		"fd00:ec2::123/128",  // AWS time sync over IPv6
	)
	cgnat    = netip.MustParsePrefix("100.64.0.0/10")
	reserved = mustPrefixes(
		"0.0.0.0/8", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
		"100::/64", "2001::/32" /* Teredo */, "2001:db8::/32", "2001:10::/28", "2001:20::/28",
		"5f00::/16",
	)
	nat64    = mustPrefixes("64:ff9b::/96", "64:ff9b:1::/48")
	sixTo4   = netip.MustParsePrefix("2002::/16")
	v4compat = netip.MustParsePrefix("::/96")
)

// Classify returns the class of a.
func Classify(a netip.Addr) Class {
	if !a.IsValid() {
		return Invalid
	}
	a = a.WithZone("")
	if a.Is4In6() {
		return Classify(a.Unmap())
	}
	for _, p := range metadata {
		if p.Contains(a) {
			return Metadata
		}
	}
	if a.Is6() {
		if v4, ok := embeddedV4(a); ok {
			c := Classify(v4)
			if c == Public {
				return Public
			}
			return c
		}
	}
	switch {
	case a.IsUnspecified():
		return Unspecified
	case a.IsLoopback():
		return Loopback
	case a.IsMulticast():
		return Multicast
	case a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast():
		return LinkLocal
	case a.IsPrivate():
		return Private
	case cgnat.Contains(a):
		return CGNAT
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return Reserved
	}
	for _, p := range reserved {
		if p.Contains(a) {
			return Reserved
		}
	}
	if a.Is6() && !netip.MustParsePrefix("2000::/3").Contains(a) {
		return Reserved // not global unicast space
	}
	return Public
}

// embeddedV4 extracts the IPv4 address an IPv6 address carries in a
// translation prefix (NAT64, 6to4, IPv4-compatible).
func embeddedV4(a netip.Addr) (netip.Addr, bool) {
	b := a.As16()
	switch {
	case v4compat.Contains(a) && !a.IsUnspecified() && a != netip.IPv6Loopback():
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixTo4.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	for _, p := range nat64 {
		if p.Contains(a) {
			return netip.AddrFrom4([4]byte(b[12:16])), true
		}
	}
	return netip.Addr{}, false
}
