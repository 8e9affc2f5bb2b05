package egress

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Bounds of the resolver's answer cache.
const (
	// maxCacheEntries bounds the names kept; when full, expired entries
	// go first, then arbitrary ones.
	maxCacheEntries = 4096
	// maxCacheTTL caps how long an answer is kept, whatever its TTL.
	maxCacheTTL = 5 * time.Minute
	// maxAnswerAddrs bounds the addresses kept per name.
	maxAnswerAddrs = 32
	// maxCNAMEHops bounds the CNAME chain followed inside one answer.
	maxCNAMEHops = 8
	// ednsSize is the UDP payload size offered (the DNS flag day 2020
	// value, which avoids IP fragmentation).
	ednsSize = 1232
)

// errNoSuchHost is a definitive negative answer (NXDOMAIN).
var errNoSuchHost = errors.New("no such host")

// netResolver is the Resolver egress uses when no DNS guard is wired in.
// It asks the DNS servers itself: one UDP socket per lookup, the A and
// AAAA questions sent together, TCP when an answer is truncated. Answers
// are kept for their TTL (at most maxCacheTTL; a TTL of 0 is not kept),
// so a name dialled many times a second costs one lookup per TTL instead
// of two DNS round trips per connection, and concurrent lookups of one
// name share one exchange. Failures are not cached. Names are absolute:
// SNI and CONNECT hosts are fully qualified, so resolv.conf's search list
// does not apply.
type netResolver struct {
	servers []string // host:port, tried in order
	timeout time.Duration
	now     func() time.Time

	mu       sync.Mutex
	cache    map[string]cacheEntry
	inflight map[string]*lookup
}

type cacheEntry struct {
	addrs   []netip.Addr
	expires time.Time
}

// lookup is one exchange in flight; later callers for the same name wait
// on done.
type lookup struct {
	done  chan struct{}
	addrs []netip.Addr
	err   error
}

// newNetResolver resolves through address (host:port), or through the
// nameservers of /etc/resolv.conf when address is empty.
func newNetResolver(address string, timeout time.Duration) *netResolver {
	servers := []string{address}
	if address == "" {
		servers = systemServers("/etc/resolv.conf")
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &netResolver{
		servers:  servers,
		timeout:  timeout,
		now:      time.Now,
		cache:    map[string]cacheEntry{},
		inflight: map[string]*lookup{},
	}
}

// NetResolver returns the Resolver egress uses without a DNS guard: it
// asks the DNS server at address (empty: the nameservers of
// /etc/resolv.conf), each resolution bounded by timeout, and keeps
// answers for their TTL (at most 5 minutes, 4,096 names).
func NetResolver(address string, timeout time.Duration) Resolver {
	return newNetResolver(address, timeout)
}

// systemServers reads the nameserver lines of a resolv.conf; without
// any, the resolver on the local host (as the C library does).
func systemServers(path string) []string {
	var out []string
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(io.LimitReader(f, 64<<10))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 2 || fields[0] != "nameserver" || len(out) == 3 {
				continue
			}
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a, 53).String())
			}
		}
		f.Close()
	}
	if len(out) == 0 {
		out = []string{"127.0.0.1:53", "[::1]:53"}
	}
	return out
}

// Resolve returns the A and AAAA addresses of name, from the cache when
// an answer is still within its TTL. The slice is the caller's.
func (n *netResolver) Resolve(ctx context.Context, _ netip.Addr, name string) ([]netip.Addr, error) {
	key := strings.ToLower(strings.TrimSuffix(name, "."))
	if key == "" || len(key) > 253 {
		return nil, fmt.Errorf("resolve %q: not a DNS name", name)
	}
	n.mu.Lock()
	if e, ok := n.cache[key]; ok {
		if n.now().Before(e.expires) {
			n.mu.Unlock()
			return slices.Clone(e.addrs), nil
		}
		delete(n.cache, key)
	}
	if l, ok := n.inflight[key]; ok {
		n.mu.Unlock()
		select {
		case <-l.done:
			return slices.Clone(l.addrs), l.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	l := &lookup{done: make(chan struct{})}
	n.inflight[key] = l
	n.mu.Unlock()

	addrs, ttl, err := n.lookup(ctx, key)
	l.addrs, l.err = addrs, err
	n.mu.Lock()
	delete(n.inflight, key)
	if err == nil && ttl > 0 {
		n.storeLocked(key, addrs, n.now().Add(min(ttl, maxCacheTTL)))
	}
	n.mu.Unlock()
	close(l.done)
	return slices.Clone(addrs), err
}

// storeLocked adds an answer, evicting expired entries and then
// arbitrary ones (down to 7/8 of the bound) when the cache is full.
func (n *netResolver) storeLocked(key string, addrs []netip.Addr, expires time.Time) {
	if len(n.cache) >= maxCacheEntries {
		now := n.now()
		for k, e := range n.cache {
			if !now.Before(e.expires) {
				delete(n.cache, k)
			}
		}
		for k := range n.cache {
			if len(n.cache) < maxCacheEntries*7/8 {
				break
			}
			delete(n.cache, k)
		}
	}
	n.cache[key] = cacheEntry{addrs: addrs, expires: expires}
}

// lookup asks the servers in turn until one gives a definitive answer
// (addresses, NXDOMAIN or an empty NOERROR). Each server gets an equal
// share of what is left of the timeout.
func (n *netResolver) lookup(ctx context.Context, name string) ([]netip.Addr, time.Duration, error) {
	qn, err := dnsmessage.NewName(name + ".")
	if err != nil {
		return nil, 0, fmt.Errorf("resolve %q: %w", name, err)
	}
	deadline := time.Now().Add(n.timeout) // sockets use the real clock, the cache n.now
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var errs []error
	for i, server := range n.servers {
		share := deadline
		if left := len(n.servers) - i; left > 1 {
			share = time.Now().Add(time.Until(deadline) / time.Duration(left))
		}
		addrs, ttl, err := exchange(ctx, server, qn, share)
		if err == nil || errors.Is(err, errNoSuchHost) || errors.Is(err, errNoAddresses) {
			if err != nil {
				err = fmt.Errorf("resolve %s: %w", name, err)
			}
			return addrs, ttl, err
		}
		errs = append(errs, fmt.Errorf("%s: %w", server, err))
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			break
		}
	}
	return nil, 0, fmt.Errorf("resolve %s: %w", name, errors.Join(errs...))
}

// errNoAddresses: the name exists but has no A or AAAA record.
var errNoAddresses = errors.New("no addresses")

// answer is what one question (A or AAAA) got.
type answer struct {
	done  bool
	rcode dnsmessage.RCode
	addrs []netip.Addr
	ttl   uint32
	err   error
}

var qtypes = [2]dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA}

// exchange asks one server for A and AAAA over one connected UDP socket
// (only the server's datagrams reach it), matching each reply by ID and
// question; a truncated reply is asked again over TCP.
func exchange(ctx context.Context, server string, qn dnsmessage.Name, deadline time.Time) ([]netip.Addr, time.Duration, error) {
	d := net.Dialer{Deadline: deadline}
	c, err := d.DialContext(ctx, "udp", server)
	if err != nil {
		return nil, 0, err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	var ids [2]uint16
	buf := make([]byte, ednsSize)
	for i, t := range qtypes {
		ids[i] = uint16(rand.Uint32())
		q, err := buildQuery(buf[:0], ids[i], qn, t)
		if err != nil {
			return nil, 0, err
		}
		if _, err := c.Write(q); err != nil {
			return nil, 0, err
		}
	}
	var res [2]answer
	for !res[0].done || !res[1].done {
		k, err := c.Read(buf)
		if err != nil {
			// A server that answers one question and drops the other
			// still resolves the name.
			for i := range res {
				if !res[i].done {
					res[i] = answer{done: true, err: err}
				}
			}
			break
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:k])
		if err != nil || !h.Response {
			continue
		}
		i := slices.Index(ids[:], h.ID)
		if i < 0 || res[i].done || !sameQuestion(&p, qn, qtypes[i]) {
			continue // not ours (late, spoofed or garbled): keep waiting
		}
		if h.Truncated {
			res[i] = exchangeTCP(ctx, server, qn, qtypes[i], deadline)
			res[i].done = true
			continue
		}
		res[i] = parseAnswer(&p, h, qn, qtypes[i])
		res[i].done = true
	}
	return combine(res)
}

// combine merges the A and AAAA answers: any address is a success (kept
// for the shortest TTL of the records used); otherwise NXDOMAIN or an
// empty NOERROR is definitive, anything else (SERVFAIL, REFUSED, a
// malformed reply) lets the caller try the next server.
func combine(res [2]answer) ([]netip.Addr, time.Duration, error) {
	var addrs []netip.Addr
	ttl := uint32(0)
	first := true
	for _, r := range res {
		if len(r.addrs) == 0 {
			continue
		}
		addrs = append(addrs, r.addrs...)
		if first || r.ttl < ttl {
			ttl = r.ttl
		}
		first = false
	}
	if len(addrs) > 0 {
		if len(addrs) > maxAnswerAddrs {
			addrs = addrs[:maxAnswerAddrs]
		}
		return addrs, time.Duration(ttl) * time.Second, nil
	}
	for _, r := range res {
		if r.err == nil && r.rcode == dnsmessage.RCodeNameError {
			return nil, 0, errNoSuchHost
		}
	}
	for _, r := range res {
		if r.err != nil {
			return nil, 0, r.err
		}
		if r.rcode != dnsmessage.RCodeSuccess {
			return nil, 0, fmt.Errorf("server answered %s", rcodeName(r.rcode))
		}
	}
	return nil, 0, errNoAddresses
}

// rcodeName spells an error rcode as DNS tools do (RFC 6895).
func rcodeName(c dnsmessage.RCode) string {
	switch c {
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return fmt.Sprintf("rcode %d", c)
}

func buildQuery(buf []byte, id uint16, qn dnsmessage.Name, t dnsmessage.Type) ([]byte, error) {
	b := dnsmessage.NewBuilder(buf, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(dnsmessage.Question{Name: qn, Type: t, Class: dnsmessage.ClassINET}); err != nil {
		return nil, err
	}
	if err := b.StartAdditionals(); err != nil {
		return nil, err
	}
	var rh dnsmessage.ResourceHeader
	if err := rh.SetEDNS0(ednsSize, dnsmessage.RCodeSuccess, false); err != nil {
		return nil, err
	}
	if err := b.OPTResource(rh, dnsmessage.OPTResource{}); err != nil {
		return nil, err
	}
	return b.Finish()
}

// sameQuestion reads the reply's question and reports whether it is
// exactly the one asked (names compared case-insensitively).
func sameQuestion(p *dnsmessage.Parser, qn dnsmessage.Name, t dnsmessage.Type) bool {
	q, err := p.Question()
	if err != nil || q.Type != t || q.Class != dnsmessage.ClassINET || !equalName(q.Name, qn) {
		return false
	}
	return p.SkipAllQuestions() == nil
}

func equalName(a, b dnsmessage.Name) bool {
	return a.Length == b.Length && strings.EqualFold(string(a.Data[:a.Length]), string(b.Data[:b.Length]))
}

// parseAnswer reads the answer section: address records of type t owned
// by the question name or the end of its CNAME chain. The TTL is the
// shortest of the records used.
func parseAnswer(p *dnsmessage.Parser, h dnsmessage.Header, qn dnsmessage.Name, t dnsmessage.Type) answer {
	r := answer{rcode: h.RCode}
	if h.RCode != dnsmessage.RCodeSuccess {
		return r
	}
	type cname struct {
		owner, target dnsmessage.Name
		ttl           uint32
	}
	type addr struct {
		owner dnsmessage.Name
		a     netip.Addr
		ttl   uint32
	}
	var cnames []cname
	var addrs []addr
	for len(cnames)+len(addrs) < 4*maxAnswerAddrs {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			r.err = fmt.Errorf("malformed reply: %w", err)
			return r
		}
		switch {
		case rh.Class != dnsmessage.ClassINET:
			err = p.SkipAnswer()
		case rh.Type == dnsmessage.TypeCNAME:
			var c dnsmessage.CNAMEResource
			if c, err = p.CNAMEResource(); err == nil {
				cnames = append(cnames, cname{rh.Name, c.CNAME, rh.TTL})
			}
		case rh.Type == t && t == dnsmessage.TypeA:
			var a dnsmessage.AResource
			if a, err = p.AResource(); err == nil {
				addrs = append(addrs, addr{rh.Name, netip.AddrFrom4(a.A), rh.TTL})
			}
		case rh.Type == t && t == dnsmessage.TypeAAAA:
			var a dnsmessage.AAAAResource
			if a, err = p.AAAAResource(); err == nil {
				addrs = append(addrs, addr{rh.Name, netip.AddrFrom16(a.AAAA).Unmap(), rh.TTL})
			}
		default:
			err = p.SkipAnswer()
		}
		if err != nil {
			r.err = fmt.Errorf("malformed reply: %w", err)
			return r
		}
	}
	owner, ttl := qn, ^uint32(0)
	for hop := 0; hop < maxCNAMEHops; hop++ {
		i := slices.IndexFunc(cnames, func(c cname) bool { return equalName(c.owner, owner) })
		if i < 0 {
			break
		}
		owner, ttl = cnames[i].target, min(ttl, cnames[i].ttl)
	}
	for _, a := range addrs {
		if equalName(a.owner, owner) && len(r.addrs) < maxAnswerAddrs {
			r.addrs = append(r.addrs, a.a)
			ttl = min(ttl, a.ttl)
		}
	}
	if len(r.addrs) > 0 {
		r.ttl = ttl
	}
	return r
}

// exchangeTCP asks one question over TCP (after a truncated UDP reply).
func exchangeTCP(ctx context.Context, server string, qn dnsmessage.Name, t dnsmessage.Type, deadline time.Time) answer {
	d := net.Dialer{Deadline: deadline}
	c, err := d.DialContext(ctx, "tcp", server)
	if err != nil {
		return answer{err: err}
	}
	defer c.Close()
	c.SetDeadline(deadline)
	id := uint16(rand.Uint32())
	q, err := buildQuery(make([]byte, 2, 512), id, qn, t)
	if err != nil {
		return answer{err: err}
	}
	binary.BigEndian.PutUint16(q, uint16(len(q)-2))
	if _, err := c.Write(q); err != nil {
		return answer{err: err}
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return answer{err: err}
	}
	msg := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, msg); err != nil {
		return answer{err: err}
	}
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || !h.Response || h.ID != id || !sameQuestion(&p, qn, t) {
		return answer{err: errors.New("malformed reply over TCP")}
	}
	return parseAnswer(&p, h, qn, t)
}
