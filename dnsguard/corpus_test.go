package dnsguard

import (
	"bufio"
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ztgate/ztgate/e2e/testenv"
)

type corpusQuery struct {
	name    string // presentation format, fully qualified
	qtype   uint16
	session string
}

// loadCorpus reads "<qname> <QTYPE>" lines; "# session:" comments start a
// new session.
func loadCorpus(t testing.TB, rel string) []corpusQuery {
	t.Helper()
	f, err := os.Open(testenv.Shared(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []corpusQuery
	session := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if s, ok := strings.CutPrefix(line, "# session:"); ok {
			session = strings.TrimSpace(s)
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("%s: bad line %q", rel, line)
		}
		name, typ := line[:i], line[i+1:]
		qt, ok := dns.StringToType[typ]
		if !ok {
			if _, err := fmt.Sscanf(typ, "TYPE%d", &qt); err != nil {
				t.Fatalf("%s: unknown qtype %q", rel, typ)
			}
		}
		if name != "." {
			name += "."
		}
		out = append(out, corpusQuery{name, qt, session})
	}
	return out
}

// synthUpstream answers every question (A, AAAA, TXT with data, else
// NODATA with an SOA) and counts the name bytes that reached it.
type synthUpstream struct {
	queries   atomic.Int64
	nameBytes atomic.Int64
}

func (u *synthUpstream) exchange(q *dns.Msg) (*dns.Msg, error) {
	u.queries.Add(1)
	u.nameBytes.Add(int64(len(q.Question[0].Name)))
	m := new(dns.Msg)
	m.SetReply(q)
	name := q.Question[0].Name
	hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: 60}
	switch q.Question[0].Qtype {
	case dns.TypeA:
		hdr.Rrtype = dns.TypeA
		m.Answer = []dns.RR{&dns.A{Hdr: hdr, A: net.IPv4(192, 0, 2, 1)}}
	case dns.TypeAAAA:
		hdr.Rrtype = dns.TypeAAAA
		m.Answer = []dns.RR{&dns.AAAA{Hdr: hdr, AAAA: net.ParseIP("2001:db8::1")}}
	case dns.TypeTXT:
		hdr.Rrtype = dns.TypeTXT
		m.Answer = []dns.RR{&dns.TXT{Hdr: hdr, Txt: []string{"v=spf1 include:_spf.example.net -all"}}}
	default:
		soa, _ := dns.NewRR(". 60 IN SOA a.root-servers.net. nstld.verisign-grs.com. 1 1800 900 604800 60")
		m.Ns = []dns.RR{soa}
	}
	return m, nil
}

// newOfflineServer is a Server that is not listening, whose upstream is
// synthUpstream, driven through the full answer path.
func newOfflineServer(t testing.TB, body string, clk *clock) (*Server, *synthUpstream) {
	t.Helper()
	cfg := parseCfg(t, "dns:\n  listen: [\"127.0.0.1:0\"]\n  upstreams: [{address: \"127.0.0.1:53\"}]\n"+body)
	s, err := New(cfg, Deps{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	up := &synthUpstream{}
	s.exchangeHook = up.exchange
	return s, up
}

func ask(s *Server, client netip.Addr, name string, qtype uint16) outcome {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = dns.Id()
	m.SetEdns0(1232, false)
	return s.answer(context.Background(), client, false, m, nil)
}

func blockedReason(o outcome) bool {
	switch o.reason {
	case ReasonTunnel, ReasonQType, ReasonDenyList, ReasonNotAllowed, ReasonRateLimit, ReasonNoGroup:
		return true
	}
	return false
}

var commonSubs = []string{"", "www.", "mail.", "api.", "cdn.", "static.", "img.", "m.", "login.", "accounts.",
	"assets.", "media.", "blog.", "shop.", "support.", "app.", "news.", "video.", "ssl.", "s1.", "edge-03.", "fonts."}

// TestNoFalsePositives replays the 10,000 popular domains (with common
// subdomains and A/AAAA/HTTPS/MX/TXT) and the 666 tricky legitimate
// queries through the full path with the default profile, from a few
// clients at a realistic rate. None may be blocked.
func TestNoFalsePositives(t *testing.T) {
	clk := newClock()
	s, _ := newOfflineServer(t, "", clk)
	clients := []netip.Addr{mustAddr("10.0.0.11"), mustAddr("10.0.0.12"), mustAddr("10.0.0.13"), mustAddr("10.0.0.14")}
	total, blocked := 0, 0
	var examples []string
	run := func(client netip.Addr, name string, qt uint16) {
		total++
		if o := ask(s, client, name, qt); blockedReason(o) {
			blocked++
			if len(examples) < 10 {
				examples = append(examples, fmt.Sprintf("%s %s (%s)", name, dns.TypeToString[qt], o.reason))
			}
		}
		clk.Add(10 * time.Millisecond) // 100 queries/s over all clients
	}
	domains := loadLines(t, "testdata/dns/legit-domains.txt")
	qtypes := []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeHTTPS, dns.TypeA, dns.TypeMX, dns.TypeTXT}
	for i, d := range domains {
		h := fnv.New32a()
		h.Write([]byte(d))
		x := h.Sum32()
		c := clients[x%uint32(len(clients))]
		run(c, d+".", dns.TypeA)
		run(c, "www."+d+".", dns.TypeA)
		run(c, "www."+d+".", dns.TypeAAAA)
		run(c, commonSubs[x%uint32(len(commonSubs))]+d+".", qtypes[i%len(qtypes)])
	}
	popular := total
	popularBlocked := blocked
	tricky := loadCorpus(t, "testdata/dns/legit-tricky.txt")
	for round := 0; round < 3; round++ {
		for i, q := range tricky {
			run(clients[(i/25+round)%len(clients)], q.name, q.qtype)
		}
	}
	t.Logf("no-false-positive replay: legit-domains.txt %d queries, %d blocked; legit-tricky.txt %d queries (3 rounds of %d), %d blocked",
		popular, popularBlocked, total-popular, len(tricky), blocked-popularBlocked)
	if blocked != 0 {
		t.Fatalf("%d of %d legitimate queries blocked, e.g.:\n%s", blocked, total, strings.Join(examples, "\n"))
	}
	if n, _, _ := s.tracker.Size(); n == 0 {
		t.Fatalf("the detector tracked nothing: the replay did not reach it")
	}
}

func loadLines(t testing.TB, rel string) []string {
	t.Helper()
	b, err := os.ReadFile(testenv.Shared(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// TestTunnelCorporaBlocked replays every captured iodine and dns2tcp
// session, each from its own client at 20 queries/s, and checks that the
// tunnel is cut and fewer than 4 KiB of name bytes reached the upstream.
func TestTunnelCorporaBlocked(t *testing.T) {
	for _, file := range []string{"testdata/dns/tunnel-iodine.txt", "testdata/dns/tunnel-dns2tcp.txt"} {
		qs := loadCorpus(t, file)
		sessions := map[string][]corpusQuery{}
		var order []string
		for _, q := range qs {
			if _, ok := sessions[q.session]; !ok {
				order = append(order, q.session)
			}
			sessions[q.session] = append(sessions[q.session], q)
		}
		for i, name := range order {
			t.Run(name, func(t *testing.T) {
				clk := newClock()
				s, up := newOfflineServer(t, "", clk)
				client := netip.AddrFrom4([4]byte{10, 9, byte(len(file)), byte(i)})
				var sessionBytes, firstBlock, blocked int
				for j, q := range sessions[name] {
					sessionBytes += len(q.name)
					if o := ask(s, client, q.name, q.qtype); blockedReason(o) {
						blocked++
						if firstBlock == 0 {
							firstBlock = j + 1
						}
					}
					clk.Add(50 * time.Millisecond)
				}
				leaked := up.nameBytes.Load()
				rep := s.Report()
				rules := ""
				if len(rep.Alerts) > 0 {
					rules = strings.Join(rep.Alerts[0].Rules, ",") + " features=" + strings.Join(rep.Alerts[0].Features, ",")
				}
				t.Logf("%-28s %3d queries (%5d name bytes): first blocked #%d, %3d blocked, %4d name bytes reached the upstream; alert: %s",
					name, len(sessions[name]), sessionBytes, firstBlock, blocked, leaked, rules)
				if leaked >= 4096 {
					t.Errorf("%d name bytes reached the upstream, want < 4096", leaked)
				}
				if last := sessions[name][len(sessions[name])-1]; !blockedReason(ask(s, client, last.name, last.qtype)) {
					t.Errorf("the session's last query is not blocked: the tunnel still works")
				}
			})
		}
	}
}

// TestReportMode: the same traffic is evaluated and alerted on but not
// blocked.
func TestReportMode(t *testing.T) {
	clk := newClock()
	s, up := newOfflineServer(t, "  tunneling: {mode: report, refuse_types: [none]}\n", clk)
	qs := loadCorpus(t, "testdata/dns/tunnel-dns2tcp.txt")
	client := mustAddr("10.9.9.9")
	for _, q := range qs {
		if o := ask(s, client, q.name, q.qtype); blockedReason(o) {
			t.Fatalf("report mode blocked %s (%s)", q.name, o.reason)
		}
		clk.Add(50 * time.Millisecond)
	}
	if up.queries.Load() != int64(len(qs)) {
		t.Errorf("upstream saw %d of %d queries", up.queries.Load(), len(qs))
	}
	rep := s.Report()
	if len(rep.Alerts) == 0 || rep.Alerts[0].Mode != "report" || rep.Alerts[0].Domain != "t2.test" {
		t.Fatalf("report mode raised no alert for t2.test: %+v", rep.Alerts)
	}
}

// TestQuarantineCoversCacheHits: once a pair is judged, a name of that
// domain already in the cache is blocked for that client too (and only
// for that client).
func TestQuarantineCoversCacheHits(t *testing.T) {
	clk := newClock()
	s, _ := newOfflineServer(t, "", clk)
	client, other := mustAddr("10.7.0.1"), mustAddr("10.7.0.2")
	if o := ask(s, client, "www.t2.test.", dns.TypeA); o.reason != ReasonUpstream {
		t.Fatalf("warm-up: %s", o.reason)
	}
	if o := ask(s, client, "www.t2.test.", dns.TypeA); o.reason != ReasonCache {
		t.Fatalf("second query not a cache hit: %s", o.reason)
	}
	for _, q := range loadCorpus(t, "testdata/dns/tunnel-dns2tcp.txt")[:5] {
		ask(s, client, q.name, q.qtype)
	}
	if o := ask(s, client, "www.t2.test.", dns.TypeA); o.reason != ReasonTunnel {
		t.Fatalf("cached name of a quarantined pair: %s, want blocked (tunnel)", o.reason)
	}
	if o := ask(s, other, "www.t2.test.", dns.TypeA); o.reason != ReasonCache {
		t.Fatalf("another client: %s, want a cache hit", o.reason)
	}
}
