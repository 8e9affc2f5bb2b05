package dnsguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/ztgate/ztgate/configs"
)

// Protocol is how dnsguard talks to an upstream. String matches the
// config spelling.
type Protocol int

// Upstream protocols.
const (
	ProtoUDP Protocol = iota
	ProtoTCP
	ProtoTLS
)

func (p Protocol) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoTLS:
		return "tls"
	default:
		return "udp"
	}
}

// DialTLSFunc opens a DNS-over-TLS connection (see package dot).
type DialTLSFunc func(ctx context.Context, addr, serverName string) (net.Conn, error)

// upstream is one resolver of a compiled runtime.
type upstream struct {
	addr       string
	proto      Protocol
	serverName string
	zones      []string
	*health    // shared by every runtime that names the same resolver
}

// health outlives reloads: it is kept per (protocol, address, server
// name) in the Server, so a reload does not forget a dead upstream.
type health struct {
	fails     atomic.Int32 // consecutive failures
	downUntil atomic.Int64 // unix ns; skipped until then unless all are down
}

const (
	failThreshold = 3
	downFor       = 5 * time.Second
)

func (u *health) healthy(now int64) bool { return u.downUntil.Load() <= now }

func (u *health) report(ok bool, now time.Time) {
	if ok {
		u.fails.Store(0)
		u.downUntil.Store(0)
		return
	}
	if u.fails.Add(1) >= failThreshold {
		u.downUntil.Store(now.Add(downFor).UnixNano())
	}
}

func compileUpstreams(us []configs.DNSUpstream, dialTLS DialTLSFunc, healthOf func(key string) *health) ([]*upstream, error) {
	out := make([]*upstream, 0, len(us))
	for i, c := range us {
		u := &upstream{addr: c.Address, serverName: c.ServerName, health: healthOf(c.Protocol + " " + c.Address + " " + c.ServerName)}
		switch c.Protocol {
		case "udp", "":
			u.proto = ProtoUDP
		case "tcp":
			u.proto = ProtoTCP
		case "tls":
			u.proto = ProtoTLS
			if dialTLS == nil {
				return nil, fmt.Errorf("dns.upstreams[%d]: protocol tls needs a DNS-over-TLS dialer (Deps.DialTLS)", i)
			}
		default:
			return nil, fmt.Errorf("dns.upstreams[%d].protocol: %q is not udp, tcp or tls", i, c.Protocol)
		}
		if _, _, err := net.SplitHostPort(c.Address); err != nil {
			return nil, fmt.Errorf("dns.upstreams[%d].address: %q: %w", i, c.Address, err)
		}
		for _, z := range c.Zones {
			u.zones = append(u.zones, strings.ToLower(strings.TrimSuffix(z, ".")))
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, errors.New("dns.upstreams: none configured")
	}
	return out, nil
}

// pick returns the upstreams for name (lower case): those with the most
// specific matching zone, else those without zones; healthy ones first.
func pick(us []*upstream, name string, now time.Time, buf []*upstream) []*upstream {
	best := -1
	for _, u := range us {
		for _, z := range u.zones {
			if (name == z || strings.HasSuffix(name, "."+z)) && len(z) > best {
				best = len(z)
			}
		}
	}
	cand := buf[:0]
	for _, u := range us {
		if best < 0 {
			if len(u.zones) == 0 {
				cand = append(cand, u)
			}
			continue
		}
		for _, z := range u.zones {
			if len(z) == best && (name == z || strings.HasSuffix(name, "."+z)) {
				cand = append(cand, u)
				break
			}
		}
	}
	// Stable partition: healthy first, keeping config order.
	ns := now.UnixNano()
	out := make([]*upstream, 0, len(cand))
	for _, u := range cand {
		if u.healthy(ns) {
			out = append(out, u)
		}
	}
	for _, u := range cand {
		if !u.healthy(ns) {
			out = append(out, u)
		}
	}
	return out
}

var (
	errMismatch = errors.New("answer does not match the question")
	errNoUp     = errors.New("no upstream for this name")
)

// exchange sends q to u and returns a checked answer: same ID, a response,
// the same question. UDP answers with TC set are retried over TCP.
func (s *Server) exchange(ctx context.Context, rt *runtime, u *upstream, q *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, rt.timeout)
	defer cancel()
	var r *dns.Msg
	var err error
	switch u.proto {
	case ProtoUDP:
		r, err = s.exchangeUDP(ctx, rt, u.addr, q)
		if err == nil && r.Truncated {
			r, err = s.exchangeStream(ctx, u, q, nil)
		}
	case ProtoTCP:
		r, err = s.exchangeStream(ctx, u, q, nil)
	case ProtoTLS:
		r, err = s.exchangeStream(ctx, u, q, s.deps.DialTLS)
	}
	if err != nil {
		return nil, err
	}
	if r.Id != q.Id || !r.Response || len(r.Question) != 1 ||
		!strings.EqualFold(r.Question[0].Name, q.Question[0].Name) ||
		r.Question[0].Qtype != q.Question[0].Qtype || r.Question[0].Qclass != q.Question[0].Qclass {
		return nil, errMismatch
	}
	return r, nil
}

func (s *Server) exchangeUDP(ctx context.Context, rt *runtime, addr string, q *dns.Msg) (*dns.Msg, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr) // a fresh socket: a random source port per query
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	co := &dns.Conn{Conn: c, UDPSize: uint16(rt.udpSize)}
	if err := co.WriteMsg(q); err != nil {
		return nil, err
	}
	for {
		r, err := co.ReadMsg()
		if err != nil {
			return nil, err
		}
		if r.Id == q.Id { // ignore stray datagrams; a spoofer must also guess the port
			return r, nil
		}
	}
}

func (s *Server) exchangeStream(ctx context.Context, u *upstream, q *dns.Msg, dialTLS DialTLSFunc) (*dns.Msg, error) {
	var c net.Conn
	var err error
	if dialTLS != nil {
		c, err = dialTLS(ctx, u.addr, u.serverName)
	} else {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", u.addr)
	}
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	co := &dns.Conn{Conn: c}
	if err := co.WriteMsg(q); err != nil {
		return nil, err
	}
	return co.ReadMsg()
}
