package egress

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/dns/dnsmessage"
)

// dnsStub is a miekg/dns server on loopback (UDP and TCP on the same
// port) whose answers a test chooses; it counts the questions it gets.
type dnsStub struct {
	addr string
	mu   sync.Mutex
	seen map[string]int // "name type net" → count
}

func startDNSStub(t *testing.T, handle func(w dns.ResponseWriter, q *dns.Msg)) *dnsStub {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		t.Skipf("TCP side of a free UDP port is taken: %v", err)
	}
	s := &dnsStub{addr: pc.LocalAddr().String(), seen: map[string]int{}}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		s.mu.Lock()
		s.seen[strings.ToLower(q.Question[0].Name)+" "+dns.TypeToString[q.Question[0].Qtype]+" "+w.LocalAddr().Network()]++
		s.mu.Unlock()
		handle(w, q)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return s
}

func (s *dnsStub) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[key]
}

func (s *dnsStub) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.seen {
		n += c
	}
	return n
}

func rrA(name, ip string, ttl uint32) dns.RR {
	return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.ParseIP(ip)}
}

func rrAAAA(name, ip string, ttl uint32) dns.RR {
	return &dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: net.ParseIP(ip)}
}

func rrCNAME(name, target string, ttl uint32) dns.RR {
	return &dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl}, Target: target}
}

// zone answers from a table of records by name and type; names not in
// names get NXDOMAIN.
func zone(names map[string][]dns.RR) func(w dns.ResponseWriter, q *dns.Msg) {
	return func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		rrs, ok := names[strings.ToLower(q.Question[0].Name)]
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Question[0].Qtype || rr.Header().Rrtype == dns.TypeCNAME {
				m.Answer = append(m.Answer, rr)
			}
		}
		w.WriteMsg(m)
	}
}

func TestNetResolver(t *testing.T) {
	chain := []dns.RR{
		// Out of order, with a record for an unrelated owner that must
		// not be taken.
		rrA("other.test.", "192.0.2.99", 60),
		rrA("end.cdn.test.", "192.0.2.10", 60),
		rrCNAME("www.chain.test.", "mid.cdn.test.", 300),
		rrCNAME("mid.cdn.test.", "end.cdn.test.", 30),
	}
	main := startDNSStub(t, zone(map[string][]dns.RR{
		"both.test.":      {rrA("both.test.", "192.0.2.1", 60), rrAAAA("both.test.", "2001:db8::1", 60), rrAAAA("both.test.", "::ffff:192.0.2.7", 60)},
		"www.chain.test.": chain,
		"nodata.test.":    {},
		"upper.test.":     {rrA("UPPER.test.", "192.0.2.5", 60)},
	}))
	servfail := startDNSStub(t, func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeServerFailure)
		w.WriteMsg(m)
	})
	truncating := startDNSStub(t, func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if w.LocalAddr().Network() == "udp" {
			m.Truncated = true
		} else if q.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, rrA(q.Question[0].Name, "192.0.2.20", 60))
		}
		w.WriteMsg(m)
	})
	noAAAA := startDNSStub(t, func(w dns.ResponseWriter, q *dns.Msg) {
		if q.Question[0].Qtype == dns.TypeAAAA {
			return // dropped: the A answer must still count
		}
		m := new(dns.Msg)
		m.SetReply(q)
		m.Answer = append(m.Answer, rrA(q.Question[0].Name, "192.0.2.30", 60))
		w.WriteMsg(m)
	})

	cases := []struct {
		name    string
		servers []string
		timeout time.Duration
		query   string
		want    []string
		wantErr error
	}{
		{"A and AAAA, mapped address unmapped", []string{main.addr}, 0, "both.test", []string{"192.0.2.1", "2001:db8::1", "192.0.2.7"}, nil},
		{"trailing dot and upper case", []string{main.addr}, 0, "Both.TEST.", []string{"192.0.2.1", "2001:db8::1", "192.0.2.7"}, nil},
		{"owner name in another case", []string{main.addr}, 0, "upper.test", []string{"192.0.2.5"}, nil},
		{"CNAME chain out of order", []string{main.addr}, 0, "www.chain.test", []string{"192.0.2.10"}, nil},
		{"NXDOMAIN", []string{main.addr}, 0, "missing.test", nil, errNoSuchHost},
		{"NXDOMAIN is not retried elsewhere", []string{main.addr, noAAAA.addr}, 0, "missing.test", nil, errNoSuchHost},
		{"NODATA", []string{main.addr}, 0, "nodata.test", nil, errNoAddresses},
		{"SERVFAIL, then the next server", []string{servfail.addr, main.addr}, 0, "both.test", []string{"192.0.2.1", "2001:db8::1", "192.0.2.7"}, nil},
		{"truncated over UDP, asked again over TCP", []string{truncating.addr}, 0, "big.test", []string{"192.0.2.20"}, nil},
		{"AAAA never answered", []string{noAAAA.addr}, 300 * time.Millisecond, "a-only.test", []string{"192.0.2.30"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newNetResolver(tc.servers[0], tc.timeout)
			r.servers = tc.servers
			got, err := r.Resolve(context.Background(), netip.Addr{}, tc.query)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, a := range got {
				s = append(s, a.String())
			}
			if !slices.Equal(s, tc.want) {
				t.Fatalf("got %v, want %v", s, tc.want)
			}
		})
	}
	t.Run("SERVFAIL everywhere", func(t *testing.T) {
		r := newNetResolver(servfail.addr, time.Second)
		if _, err := r.Resolve(context.Background(), netip.Addr{}, "both.test"); err == nil || !strings.Contains(err.Error(), "SERVFAIL") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestNetResolverCache: answers are kept for their TTL (capped), a TTL
// of 0 and failures are not kept, and callers cannot change the cache.
func TestNetResolverCache(t *testing.T) {
	s := startDNSStub(t, zone(map[string][]dns.RR{
		"short.test.": {rrA("short.test.", "192.0.2.1", 30)},
		"long.test.":  {rrA("long.test.", "192.0.2.2", 86400)},
		"zero.test.":  {rrA("zero.test.", "192.0.2.3", 0)},
		// The shortest TTL of the records used decides.
		"alias.test.": {rrCNAME("alias.test.", "target.test.", 10), rrA("target.test.", "192.0.2.4", 3600)},
	}))
	now := time.Unix(1e9, 0)
	r := newNetResolver(s.addr, time.Second)
	r.now = func() time.Time { return now }
	resolve := func(name string) {
		t.Helper()
		if _, err := r.Resolve(context.Background(), netip.Addr{}, name); err != nil && name != "missing.test" {
			t.Fatal(err)
		}
	}
	asked := func(name string) int { return s.count(name + ". A udp") }

	resolve("short.test")
	resolve("short.test")
	if n := asked("short.test"); n != 1 {
		t.Fatalf("short.test asked %d times within its TTL", n)
	}
	now = now.Add(31 * time.Second)
	resolve("short.test")
	if n := asked("short.test"); n != 2 {
		t.Fatalf("short.test asked %d times after its TTL", n)
	}

	resolve("long.test")
	now = now.Add(maxCacheTTL - time.Second)
	resolve("long.test")
	if n := asked("long.test"); n != 1 {
		t.Fatalf("long.test asked %d times", n)
	}
	now = now.Add(2 * time.Second)
	resolve("long.test")
	if n := asked("long.test"); n != 2 {
		t.Fatalf("long.test kept beyond the cap (asked %d times)", n)
	}

	resolve("zero.test")
	resolve("zero.test")
	if n := asked("zero.test"); n != 2 {
		t.Fatalf("TTL 0 answer kept (asked %d times)", n)
	}

	resolve("alias.test")
	now = now.Add(11 * time.Second)
	resolve("alias.test")
	if n := asked("alias.test"); n != 2 {
		t.Fatalf("alias.test kept beyond its CNAME's TTL (asked %d times)", n)
	}

	resolve("missing.test")
	resolve("missing.test")
	if n := asked("missing.test"); n != 2 {
		t.Fatalf("failure cached (asked %d times)", n)
	}

	got, _ := r.Resolve(context.Background(), netip.Addr{}, "short.test")
	got[0] = netip.MustParseAddr("198.51.100.1")
	again, _ := r.Resolve(context.Background(), netip.Addr{}, "short.test")
	if again[0].String() != "192.0.2.1" {
		t.Fatalf("a caller changed the cached answer: %v", again)
	}
}

// TestNetResolverConcurrent: many connections to one name at once cost
// one exchange (the first lookup is shared, later ones hit the cache).
func TestNetResolverConcurrent(t *testing.T) {
	release := make(chan struct{})
	s := startDNSStub(t, func(w dns.ResponseWriter, q *dns.Msg) {
		<-release
		zone(map[string][]dns.RR{"busy.test.": {rrA("busy.test.", "192.0.2.1", 60)}})(w, q)
	})
	r := newNetResolver(s.addr, 5*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			if _, err := r.Resolve(context.Background(), netip.Addr{}, "busy.test"); err != nil {
				errs <- err
			}
		})
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := s.total(); n != 2 {
		t.Fatalf("20 concurrent lookups asked %d questions, want 2 (A and AAAA once)", n)
	}
}

// TestNetResolverIgnoresForeignReplies: replies with another ID or
// another question (late, spoofed) are skipped, not taken as the answer.
func TestNetResolverIgnoresForeignReplies(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			send := func(m *dns.Msg) {
				b, _ := m.Pack()
				pc.WriteTo(b, from)
			}
			bad := new(dns.Msg)
			bad.SetReply(q)
			bad.Id++
			bad.Answer = []dns.RR{rrA(q.Question[0].Name, "203.0.113.66", 60), rrAAAA(q.Question[0].Name, "2001:db8::66", 60)}
			send(bad)
			other := new(dns.Msg)
			other.SetReply(q)
			other.Question[0].Name = "evil.test."
			other.Answer = []dns.RR{rrA("evil.test.", "203.0.113.67", 60)}
			send(other)
			good := new(dns.Msg)
			good.SetReply(q)
			if q.Question[0].Qtype == dns.TypeA {
				good.Answer = []dns.RR{rrA(q.Question[0].Name, "192.0.2.1", 60)}
			}
			send(good)
		}
	}()
	r := newNetResolver(pc.LocalAddr().String(), 5*time.Second)
	got, err := r.Resolve(context.Background(), netip.Addr{}, "real.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].String() != "192.0.2.1" {
		t.Fatalf("got %v, want [192.0.2.1]", got)
	}
}

func TestNetResolverCacheBounded(t *testing.T) {
	r := newNetResolver("127.0.0.1:1", time.Second)
	exp := r.now().Add(time.Hour)
	for i := range maxCacheEntries + 100 {
		r.storeLocked("n"+strconv.Itoa(i)+".test", nil, exp)
		if len(r.cache) > maxCacheEntries {
			t.Fatalf("%d entries after %d stores", len(r.cache), i+1)
		}
	}
}

func TestSystemServers(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, conf string
		want       []string
	}{
		{"v4, v6, comments, options", "# generated\nsearch corp.example\nnameserver 10.0.0.2\nnameserver 2001:db8::53\noptions ndots:5\n",
			[]string{"10.0.0.2:53", "[2001:db8::53]:53"}},
		{"at most three, bad lines skipped", "nameserver 1.1.1.1\nnameserver bogus\nnameserver 2.2.2.2\nnameserver 3.3.3.3\nnameserver 4.4.4.4\n",
			[]string{"1.1.1.1:53", "2.2.2.2:53", "3.3.3.3:53"}},
		{"none: the local host", "search x\n", []string{"127.0.0.1:53", "[::1]:53"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "resolv.conf")
			os.WriteFile(p, []byte(tc.conf), 0o600)
			if got := systemServers(p); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	if got := systemServers(filepath.Join(dir, "missing")); !slices.Equal(got, []string{"127.0.0.1:53", "[::1]:53"}) {
		t.Fatalf("missing file: %v", got)
	}
}

// FuzzParseAnswer feeds arbitrary replies to the reply parser: it must
// not panic, and must only return addresses owned by the question name
// or its CNAME chain, at most maxAnswerAddrs of them.
func FuzzParseAnswer(f *testing.F) {
	q := new(dns.Msg)
	q.SetQuestion("www.chain.test.", dns.TypeA)
	for _, answers := range [][]dns.RR{
		{rrA("www.chain.test.", "192.0.2.1", 60)},
		{rrCNAME("www.chain.test.", "a.test.", 60), rrCNAME("a.test.", "b.test.", 60), rrA("b.test.", "192.0.2.2", 60)},
		{rrCNAME("www.chain.test.", "www.chain.test.", 60)},
		{rrAAAA("www.chain.test.", "2001:db8::1", 60), rrA("other.test.", "192.0.2.3", 60)},
	} {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Answer = answers
		b, _ := m.Pack()
		f.Add(b)
	}
	qn := dnsmessage.MustNewName("www.chain.test.")
	f.Fuzz(func(t *testing.T, b []byte) {
		var p dnsmessage.Parser
		h, err := p.Start(b)
		if err != nil || !sameQuestion(&p, qn, dnsmessage.TypeA) {
			return
		}
		a := parseAnswer(&p, h, qn, dnsmessage.TypeA)
		if len(a.addrs) > maxAnswerAddrs {
			t.Fatalf("%d addresses", len(a.addrs))
		}
		for _, x := range a.addrs {
			if !x.Is4() {
				t.Fatalf("A answer gave %v", x)
			}
		}
	})
}
