package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ztgate/ztgate/egress/ssrf"
)

// parseTarget parses a CONNECT authority "host:port" (IPv6 in brackets).
// It returns either a host name (not yet normalised) or an IP address.
func parseTarget(authority string) (host string, ip netip.Addr, port uint16, err error) {
	if len(authority) > 260 {
		return "", netip.Addr{}, 0, errors.New("target longer than 260 bytes")
	}
	h, ps, err := net.SplitHostPort(authority)
	if err != nil {
		return "", netip.Addr{}, 0, fmt.Errorf("target %q is not host:port", authority)
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || n == 0 || ps[0] == '+' {
		return "", netip.Addr{}, 0, fmt.Errorf("target %q has an invalid port", authority)
	}
	if h == "" {
		return "", netip.Addr{}, 0, fmt.Errorf("target %q has no host", authority)
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return "", netip.Addr{}, 0, fmt.Errorf("target %q has an IPv6 zone", authority)
		}
		return "", a.Unmap(), uint16(n), nil
	}
	if strings.ContainsAny(h, "[]%/ \t") {
		return "", netip.Addr{}, 0, fmt.Errorf("target %q has an invalid host", authority)
	}
	return h, netip.Addr{}, uint16(n), nil
}

// resolve returns the addresses to consider for t: the IP literal, or
// what the resolver (dnsguard when wired) answers for the name.
func (p *Proxy) resolve(rt *snapshot, s source, t target, rec *record) ([]netip.Addr, Reason) {
	if t.name == "" {
		rec.resolved = []netip.Addr{t.ip}
		return rec.resolved, ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), rt.lim.DialTimeout)
	defer cancel()
	addrs, err := rt.resolver.Resolve(ctx, s.addr, t.name)
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	rec.resolved = addrs
	if err != nil {
		rec.err = err
		return nil, ReasonDNSFailed
	}
	if len(addrs) == 0 {
		rec.err = errors.New("no addresses")
		return nil, ReasonDNSFailed
	}
	return addrs, ""
}

// guard is the SSRF stage, run on the addresses that may be dialled
// (after DNS, never before): an address passes if the matched rule names
// it in cidrs, or it is public. With require_dns_guard, dnsguard must
// also have given this client that address for this name. It returns the
// addresses that pass, or, if none does, the most severe reason.
func (p *Proxy) guard(rt *snapshot, s source, t target, d decision, addrs []netip.Addr) ([]netip.Addr, Reason) {
	var ok []netip.Addr
	var worst Reason
	note := func(r Reason) {
		if worst == "" || r == ReasonMetadata {
			worst = r
		}
	}
	for _, a := range addrs {
		if d.rule == nil || !d.rule.matchIP(a) {
			if c := ssrf.Classify(a); c != ssrf.Public {
				note(Reason(c.Reason()))
				continue
			}
		}
		if rt.requireDG && t.name != "" && !p.deps.Resolved.Resolved(s.addr, t.name, a) {
			note(ReasonNotViaDNSGuard)
			continue
		}
		ok = append(ok, a)
	}
	if len(ok) == 0 {
		if worst == "" {
			worst = ReasonDNSFailed
		}
		return nil, worst
	}
	return ok, ""
}

// maxDialAttempts bounds how many checked addresses one connection tries.
const maxDialAttempts = 4

// upstreamKeepAlive probes an idle destination after 30 s; interval and
// count stay the kernel's, so dialling sets two socket options, not four.
var upstreamKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: -1, Count: -1}

// dial connects to the first checked address that answers.
func (p *Proxy) dial(rt *snapshot, addrs []netip.Addr, port uint16, rec *record) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: rt.lim.DialTimeout, KeepAliveConfig: upstreamKeepAlive}
	var errs []error
	for i, a := range addrs {
		if i == maxDialAttempts {
			break
		}
		ap := netip.AddrPortFrom(a, port)
		// (Dialer.DialTCP would save parsing the text, but with no local
		// address it still binds the socket: one more system call.)
		c, err := d.DialContext(context.Background(), "tcp", ap.String())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rec.dialled = ap
		return c.(*net.TCPConn), nil
	}
	return nil, errors.Join(errs...)
}
