package egress

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/ztgate/ztgate/egress/sni"
)

// handleTransparent serves a connection redirected by nftables REDIRECT:
// the client believes it talks TLS to the original destination. The
// ClientHello's SNI decides; the original destination must be one of
// the addresses the name resolves to (else the client spoofs the SNI).
func (p *Proxy) handleTransparent(rt *snapshot, c *conn, rec *record) {
	tcp, ok := c.client.(*net.TCPConn)
	if !ok {
		p.deny(rec, ReasonNoOriginalDst, errors.New("not a TCP connection"))
		return
	}
	dst, err := originalDst(tcp)
	if err == nil && dst == addrPortOf(tcp.LocalAddr()) {
		err = errors.New("the connection was made to the proxy itself, not redirected to it")
	}
	if err != nil {
		p.deny(rec, ReasonNoOriginalDst, err)
		return
	}
	rec.host, rec.port = dst.Addr().String(), dst.Port()
	s := source{addr: rec.src.Addr()}

	// The peek reads through a pooled buffer: the ClientHello usually
	// arrives in one segment, which one read then takes whole.
	tcp.SetReadDeadline(time.Now().Add(rt.helloTO))
	hr := newHeadReader(tcp)
	defer hr.release()
	h, err := sni.Read(hr.br, rt.helloMax)
	if reason := p.checkHello(rt, h, err, rec); reason != "" {
		p.deny(rec, reason, nil)
		return
	}
	tcp.SetReadDeadline(time.Time{})
	pre := appendBuffered(h.Raw, hr.br)
	hr.release()
	t := target{name: rec.sni, port: dst.Port(), tls: true}
	if !h.HasSNI {
		if !rt.noSNI {
			p.deny(rec, ReasonNoSNI, nil)
			return
		}
		t.ip = dst.Addr() // decided by address against rules' cidrs
	}
	d := rt.decide(s, t)
	rec.dec = d
	if !d.allow {
		p.logDecision(rec)
		return
	}
	addrs, reason := p.resolve(rt, s, t, rec)
	if reason != "" {
		p.deny(rec, reason, nil)
		return
	}
	if !slices.Contains(addrs, dst.Addr()) {
		p.deny(rec, ReasonDNSMismatch, fmt.Errorf("original destination %s is not among the addresses of %q", dst.Addr(), t.name))
		return
	}
	if _, reason := p.guard(rt, s, t, d, []netip.Addr{dst.Addr()}); reason != "" {
		p.deny(rec, reason, nil)
		return
	}
	up, err := p.dial(rt, []netip.Addr{dst.Addr()}, dst.Port(), rec)
	if err != nil {
		p.deny(rec, ReasonDialFailed, err)
		return
	}
	p.logDecision(rec)
	p.splice(rt, c, tcp, up, pre, rec)
}
