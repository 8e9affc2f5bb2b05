package dnsguard

import (
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	dto "github.com/prometheus/client_model/go"

	"github.com/ztgate/ztgate/e2e/testenv"
)

func TestDigRecordTypes(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, up.addr, "", nil)
	addr := s.Addrs()[0]
	cases := []struct {
		name, qtype, want string
	}{
		{"www.example.test", "A", "192.0.2.10"},
		{"www.example.test", "AAAA", "2001:db8::10"},
		{"example.test", "TXT", "v=spf1 -all"},
		{"example.test", "MX", "10 mail.example.test."},
		{"_sip._tcp.example.test", "SRV", "10 5 5060 sip.example.test."},
	}
	for _, tool := range []string{"dig", "kdig"} {
		testenv.Tool(t, tool)
		for _, transport := range []string{"udp", "tcp"} {
			for _, c := range cases {
				t.Run(tool+"/"+transport+"/"+c.qtype, func(t *testing.T) {
					args := []string{c.name, c.qtype, "+short"}
					if transport == "tcp" {
						args = append(args, "+tcp")
					}
					out := dig(t, tool, addr, args...)
					if !strings.Contains(out, c.want) {
						t.Fatalf("%s %s over %s: want %q in\n%s", c.name, c.qtype, transport, c.want, out)
					}
				})
			}
		}
	}
}

func TestTruncationAndTCPFallback(t *testing.T) {
	testenv.Tool(t, "dig")
	up := startUpstream(t)
	s := startServer(t, up.addr, "", nil)
	addr := s.Addrs()[0]
	// The 2.4 KB answer does not fit the 1232-byte EDNS buffer dnsguard
	// offers upstream: the upstream truncates and dnsguard retries on TCP.
	// dig without EDNS gets TC from dnsguard and retries on TCP itself.
	out := dig(t, "dig", addr, "big.example.test", "TXT", "+noedns")
	if !strings.Contains(out, "Truncated, retrying in TCP mode") {
		t.Errorf("dig did not see a truncated UDP answer:\n%s", out)
	}
	if n := strings.Count(out, "big.example.test.\t"); n < 12 {
		t.Errorf("want 12 TXT records after TCP retry, got %d:\n%s", n, out)
	}
	if up.count("big.example.test.", "TXT", "udp") != 1 || up.count("big.example.test.", "TXT", "tcp") != 1 {
		t.Errorf("upstream saw udp=%d tcp=%d queries, want 1 and 1 (UDP truncated, then TCP)",
			up.count("big.example.test.", "TXT", "udp"), up.count("big.example.test.", "TXT", "tcp"))
	}
	// A small buffer over UDP gets TC; the cached full answer is reused on TCP.
	r := query(t, addr, "big.example.test", dns.TypeTXT, "udp", func(m *dns.Msg) { m.SetEdns0(600, false) })
	if !r.Truncated {
		t.Errorf("600-byte EDNS buffer: want TC, got %d answers", len(r.Answer))
	}
	if o := r.IsEdns0(); o == nil {
		t.Errorf("EDNS query answered without OPT")
	}
}

func TestCacheHitAndNegativeCache(t *testing.T) {
	up := startUpstream(t)
	clk := newClock()
	s := startServer(t, up.addr, "", clk)
	addr := s.Addrs()[0]
	for i := 0; i < 2; i++ {
		r := query(t, addr, "WWW.Example.TEST", dns.TypeA, "udp", nil)
		if len(r.Answer) != 2 {
			t.Fatalf("query %d: %d answers, want 2", i, len(r.Answer))
		}
		if r.Question[0].Name != "WWW.Example.TEST." {
			t.Errorf("question case not kept: %q", r.Question[0].Name)
		}
		clk.Add(10 * time.Second)
		if i == 1 && r.Answer[0].Header().Ttl != 290 {
			t.Errorf("cached TTL = %d, want 290 (300 aged 10s)", r.Answer[0].Header().Ttl)
		}
	}
	if n := up.count("www.example.test.", "A", "udp"); n != 1 {
		t.Errorf("upstream saw %d queries for a cached name, want 1", n)
	}
	for i := 0; i < 2; i++ {
		r := query(t, addr, "nx.example.test", dns.TypeA, "udp", nil)
		if r.Rcode != dns.RcodeNameError {
			t.Fatalf("rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
		}
		if len(r.Ns) != 1 {
			t.Fatalf("NXDOMAIN without SOA")
		}
	}
	if n := up.count("nx.example.test.", "A", "udp"); n != 1 {
		t.Errorf("NXDOMAIN not cached: upstream saw %d queries", n)
	}
	// After the SOA minimum (60s) it is asked again.
	clk.Add(61 * time.Second)
	query(t, addr, "nx.example.test", dns.TypeA, "udp", nil)
	if n := up.count("nx.example.test.", "A", "udp"); n != 2 {
		t.Errorf("negative entry outlived SOA minimum: upstream saw %d queries, want 2", n)
	}
	if testenv.Tool(t, "kdig"); true {
		out := dig(t, "kdig", addr, "www.example.test", "A")
		if !strings.Contains(out, "192.0.2.11") {
			t.Errorf("kdig cache hit: %s", out)
		}
	}
}

func TestUpstreamDown(t *testing.T) {
	up := startUpstream(t)
	clk := newClock()
	for _, stale := range []bool{false, true} {
		name := "servfail"
		body := ""
		if stale {
			name, body = "stale", "  cache: {serve_stale: true}\n  timeout: 1s\n"
		}
		t.Run(name, func(t *testing.T) {
			s := startServer(t, up.addr, body, clk)
			addr := s.Addrs()[0]
			if r := query(t, addr, "short.example.test", dns.TypeA, "udp", nil); len(r.Answer) != 1 {
				t.Fatalf("warm-up: %v", r)
			}
			// Point the server at a closed port: ICMP refuses at once.
			pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
			dead := pc.LocalAddr().String()
			pc.Close()
			if err := s.Apply(parseCfg(t, "dns:\n  listen: [\"127.0.0.1:0\"]\n  upstreams: [{address: \""+dead+"\"}]\n"+body)); err != nil {
				t.Fatal(err)
			}
			clk.Add(6 * time.Second) // past the 5s TTL
			r := query(t, addr, "short.example.test", dns.TypeA, "udp", nil)
			if !stale {
				if r.Rcode != dns.RcodeServerFailure {
					t.Fatalf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
				}
				return
			}
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 30 {
				t.Fatalf("want a stale answer with TTL 30, got %v", r)
			}
		})
	}
}

func TestPolicyListsAndGroups(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, up.addr, `  groups:
    - name: locked
      clients: ["127.0.0.2/32"]
      allowlist_only: true
      allow: ["*.example.test"]
    - name: default
      deny: ["*.bad.test", "blocked.example.test", "*.ads.example.test"]
      allow: ["ok.ads.example.test"]
`, nil)
	addr := s.Addrs()[0]
	cases := []struct {
		name, src string
		want      int
	}{
		{"www.example.test", "127.0.0.1", dns.RcodeSuccess},
		{"blocked.example.test", "127.0.0.1", dns.RcodeNameError},
		{"x.y.bad.test", "127.0.0.1", dns.RcodeNameError},
		{"track.ads.example.test", "127.0.0.1", dns.RcodeNameError},
		{"ok.ads.example.test", "127.0.0.1", dns.RcodeSuccess}, // the allow exception reaches the upstream (NODATA)
		{"www.example.test", "127.0.0.2", dns.RcodeSuccess},
		{"other.test", "127.0.0.2", dns.RcodeNameError},
	}
	for _, c := range cases {
		t.Run(c.name+"@"+c.src, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(c.name), dns.TypeA)
			cl := &dns.Client{Net: "udp", Timeout: 5 * time.Second,
				Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(c.src)}}}
			r, _, err := cl.Exchange(m, addr)
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != c.want {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[c.want])
			}
		})
	}
	if n := up.count("blocked.example.test.", "A", "udp"); n != 0 {
		t.Errorf("a denied name reached the upstream %d times", n)
	}
	if n := up.count("ok.ads.example.test.", "A", "udp"); n != 1 {
		t.Errorf("the allow exception did not reach the upstream (%d)", n)
	}
	if n := up.count("other.test.", "A", "udp"); n != 0 {
		t.Errorf("allowlist_only let other.test through (%d)", n)
	}
	rep := s.Report()
	if len(rep.Blocked) == 0 {
		t.Errorf("report lists no blocked names")
	}
}

func TestBlockResponseRefusedAndQTypes(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, up.addr, "  block_response: REFUSED\n  groups: [{name: all, deny: [blocked.example.test]}]\n", nil)
	addr := s.Addrs()[0]
	if r := query(t, addr, "blocked.example.test", dns.TypeA, "tcp", nil); r.Rcode != dns.RcodeRefused {
		t.Errorf("blocked: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	for _, c := range []struct {
		name  string
		qtype uint16
		want  int
	}{
		{"x.example.test", dns.TypeNULL, dns.RcodeRefused},
		{"x.example.test", dns.TypeKEY, dns.RcodeRefused},
		{"x.example.test", 65399, dns.RcodeRefused},
		{"_ta-4f66", dns.TypeNULL, dns.RcodeSuccess}, // RFC 8145 trust-anchor signal
	} {
		if r := query(t, addr, c.name, c.qtype, "udp", nil); r.Rcode != c.want {
			t.Errorf("%s %d: rcode %s, want %s", c.name, c.qtype, dns.RcodeToString[r.Rcode], dns.RcodeToString[c.want])
		}
	}
}

func TestRateLimit(t *testing.T) {
	up := startUpstream(t)
	clk := newClock() // frozen: no tokens refill during the test
	s := startServer(t, up.addr, "  rate_limit: {qps: 1, burst: 3}\n", clk)
	addr := s.Addrs()[0]
	var ok, refused int
	for i := 0; i < 10; i++ {
		r := query(t, addr, "www.example.test", dns.TypeA, "udp", nil)
		switch r.Rcode {
		case dns.RcodeSuccess:
			ok++
		case dns.RcodeRefused:
			refused++
		}
	}
	if ok != 3 || refused != 7 {
		t.Fatalf("burst 3 with a frozen clock: %d answered, %d refused; want 3 and 7", ok, refused)
	}
	clk.Add(2 * time.Second) // two tokens back
	if r := query(t, addr, "www.example.test", dns.TypeA, "udp", nil); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("after refill: %s", dns.RcodeToString[r.Rcode])
	}
}

func TestEDNSAndECS(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, up.addr, "", nil)
	addr := s.Addrs()[0]
	withECS := func(m *dns.Msg) {
		m.SetEdns0(4096, true)
		o := m.IsEdns0()
		o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.ParseIP("198.51.100.0").To4()})
	}
	r := query(t, addr, "www.example.test", dns.TypeAAAA, "udp", withECS)
	if o := r.IsEdns0(); o == nil || o.UDPSize() != 1232 || !o.Do() {
		t.Errorf("reply OPT = %v, want buffer 1232 with DO echoed", r.IsEdns0())
	}
	if up.sawECS.Load() {
		t.Errorf("ECS reached the upstream with ecs: strip")
	}
	r = query(t, addr, "www.example.test", dns.TypeAAAA, "udp", func(m *dns.Msg) {
		m.SetEdns0(1232, false)
		m.IsEdns0().SetVersion(1)
	})
	if r.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: rcode %s, want BADVERS", dns.RcodeToString[r.Rcode])
	}
	r = query(t, addr, "www.example.test", dns.TypeA, "udp", nil)
	if r.IsEdns0() != nil {
		t.Errorf("a query without EDNS got an OPT back")
	}
}

func TestMismatchedAnswerIsRejected(t *testing.T) {
	up := startUpstream(t)
	up.setHandler(func(w dns.ResponseWriter, r *dns.Msg) bool {
		if !strings.HasPrefix(r.Question[0].Name, "spoof") {
			return false
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Question[0].Name = "other.example.test."
		a, _ := dns.NewRR("other.example.test. 300 IN A 203.0.113.66")
		m.Answer = []dns.RR{a}
		w.WriteMsg(m)
		return true
	})
	s := startServer(t, up.addr, "  attempts: 1\n", nil)
	r := query(t, s.Addrs()[0], "spoof.example.test", dns.TypeA, "udp", nil)
	if r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("answer for another question: rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

func TestMalformedInputDoesNotCrash(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, up.addr, "", nil)
	addr := s.Addrs()[0]
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range [][]byte{{}, {0}, {1, 2, 3}, make([]byte, 12), []byte(strings.Repeat("\xff", 600))} {
		c.Write(p)
	}
	// Two questions: FORMERR. A response: no answer at all.
	m := new(dns.Msg)
	m.SetQuestion("www.example.test.", dns.TypeA)
	m.Question = append(m.Question, m.Question[0])
	if r := query(t, addr, "www.example.test", dns.TypeA, "tcp", func(x *dns.Msg) { x.Question = m.Question }); r.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: rcode %s, want FORMERR", dns.RcodeToString[r.Rcode])
	}
	if r := query(t, addr, "www.example.test", dns.TypeA, "udp", nil); len(r.Answer) != 2 {
		t.Fatalf("server stopped answering after malformed input: %v", r)
	}
}

func TestResolveAndResolved(t *testing.T) {
	up := startUpstream(t)
	clk := newClock()
	s := startServer(t, up.addr, "  resolved: {grace: 30s}\n  groups: [{name: all, deny: [blocked.example.test]}]\n", clk)
	client := mustAddr("10.1.2.3")
	addrs, err := s.Resolve(context.Background(), client, "www.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 3 {
		t.Fatalf("Resolve = %v, want 2 A + 1 AAAA", addrs)
	}
	cases := []struct {
		name   string
		client string
		addr   string
		want   bool
	}{
		{"www.example.test", "10.1.2.3", "192.0.2.10", true},
		{"WWW.example.test.", "10.1.2.3", "2001:db8::10", true},
		{"www.example.test", "10.1.2.4", "192.0.2.10", false}, // another client
		{"www.example.test", "10.1.2.3", "192.0.2.99", false}, // not in the answer
		{"other.example.test", "10.1.2.3", "192.0.2.10", false},
	}
	for _, c := range cases {
		if got := s.Resolved(mustAddr(c.client), c.name, mustAddr(c.addr)); got != c.want {
			t.Errorf("Resolved(%s, %s, %s) = %v, want %v", c.client, c.name, c.addr, got, c.want)
		}
	}
	// Real clients are recorded too, before they get the answer.
	query(t, s.Addrs()[0], "www.example.test", dns.TypeA, "udp", nil)
	if !s.Resolved(mustAddr("127.0.0.1"), "www.example.test", mustAddr("192.0.2.11")) {
		t.Errorf("a UDP client's answer was not recorded")
	}
	clk.Add(300*time.Second + 29*time.Second)
	if !s.Resolved(client, "www.example.test", mustAddr("192.0.2.10")) {
		t.Errorf("expired inside TTL+grace")
	}
	clk.Add(2 * time.Second)
	if s.Resolved(client, "www.example.test", mustAddr("192.0.2.10")) {
		t.Errorf("still valid after TTL+grace")
	}
	if _, err := s.Resolve(context.Background(), client, "blocked.example.test"); err == nil || !strings.Contains(err.Error(), "blocked") {
		t.Errorf("Resolve of a denied name: %v", err)
	}
	if _, err := s.Resolve(context.Background(), client, "nx.example.test"); err == nil {
		t.Errorf("Resolve of NXDOMAIN: no error")
	}
}

func TestApplyReload(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, up.addr, "", nil)
	old := s.Addrs()[0]
	query(t, old, "www.example.test", dns.TypeA, "udp", nil)
	base := "dns:\n  listen: [\"127.0.0.1:0\"]\n  upstreams: [{address: \"" + up.addr + "\"}]\n"
	// A config that cannot compile (tls without a dialer) keeps the old one.
	bad := parseCfg(t, base)
	bad.DNS.Upstreams[0].Protocol = "tls" // no DialTLS in Deps
	if err := s.Apply(bad); err == nil {
		t.Fatal("Apply accepted a tls upstream without a dialer")
	}
	if r := query(t, old, "www.example.test", dns.TypeA, "udp", nil); len(r.Answer) != 2 {
		t.Fatal("old config stopped serving after a failed Apply")
	}
	// A new deny list and a new listen address: opened before the old closes.
	var fresh string
	var err error
	for try := 0; try < 10; try++ { // the TCP side of a free UDP port may be taken: try another
		pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
		fresh = pc.LocalAddr().String()
		pc.Close()
		if err = s.Apply(parseCfg(t, strings.Replace(base, "127.0.0.1:0", fresh, 1)+"  groups: [{name: all, deny: [www.example.test]}]\n")); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Addrs(); len(got) != 1 || got[0] != fresh {
		t.Fatalf("Addrs after reload = %v, want [%s]", got, fresh)
	}
	if r := query(t, fresh, "www.example.test", dns.TypeA, "udp", nil); r.Rcode != dns.RcodeNameError {
		t.Errorf("new deny list not applied: %s", dns.RcodeToString[r.Rcode])
	}
	// The cache survived: example.test MX comes from upstream once only.
	query(t, fresh, "example.test", dns.TypeMX, "udp", nil)
	if n := up.count("www.example.test.", "A", "udp"); n != 1 {
		t.Errorf("upstream saw %d queries for www A, want 1", n)
	}
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("www.example.test.", dns.TypeA)
	if _, _, err := c.Exchange(m, old); err == nil {
		t.Errorf("the removed address still answers")
	}
}

func TestAdminHandler(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, up.addr, "  groups: [{name: all, deny: [blocked.example.test]}]\n", nil)
	query(t, s.Addrs()[0], "blocked.example.test", dns.TypeA, "udp", nil)
	rec := httptest.NewRecorder()
	s.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/dns", nil))
	var rep Report
	if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
		t.Fatal(err, rec.Body.String())
	}
	if len(rep.Blocked) != 1 || rep.Blocked[0].Name != "blocked.example.test" || rep.Sizes.CacheEntries != 0 {
		t.Errorf("report = %s", rec.Body.String())
	}
}

func TestServeStaleOnUpstreamSERVFAIL(t *testing.T) {
	up := startUpstream(t)
	clk := newClock()
	s := startServer(t, up.addr, "  cache: {serve_stale: true}\n  attempts: 1\n", clk)
	addr := s.Addrs()[0]
	if r := query(t, addr, "short.example.test", dns.TypeA, "udp", nil); len(r.Answer) != 1 {
		t.Fatalf("warm-up: %v", r)
	}
	up.setHandler(func(w dns.ResponseWriter, r *dns.Msg) bool {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		w.WriteMsg(m)
		return true
	})
	clk.Add(6 * time.Second)
	r := query(t, addr, "short.example.test", dns.TypeA, "udp", nil)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 30 {
		t.Fatalf("upstream SERVFAIL with serve_stale: want the stale answer (TTL 30), got %v", r)
	}
	clk.Add(2 * time.Hour) // past stale_for (1h)
	if r := query(t, addr, "short.example.test", dns.TypeA, "udp", nil); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("past stale_for: rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

// TestUpstreamHealth: a dead upstream is retried on the next one, marked
// down after 3 failures so later queries skip it, and a reload keeps
// that knowledge.
func TestUpstreamHealth(t *testing.T) {
	up := startUpstream(t)
	clk := newClock()
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	dead := pc.LocalAddr().String()
	pc.Close()
	body := "dns:\n  listen: [\"127.0.0.1:0\"]\n  attempts: 2\n  cache: {max_entries: -1}\n  upstreams: [{address: \"" + dead + "\"}, {address: \"" + up.addr + "\"}]\n"
	s, err := New(parseCfg(t, body), Deps{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	deadErrors := func() float64 {
		var m dto.Metric
		s.m.upstream.WithLabelValues(dead, "error").Write(&m)
		return m.GetCounter().GetValue()
	}
	for i := 0; i < 6; i++ {
		if i == 4 {
			if err := s.Apply(parseCfg(t, body)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Resolve(context.Background(), mustAddr("10.0.0.1"), "www.example.test"); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
	}
	// Each Resolve asks A and AAAA: the first 3 exchanges hit the dead
	// upstream, then it is skipped (before and after the reload).
	if n := deadErrors(); n != 3 {
		t.Errorf("dead upstream tried %v times, want 3", n)
	}
	clk.Add(6 * time.Second) // past the 5 s down time: tried again
	s.Resolve(context.Background(), mustAddr("10.0.0.1"), "www.example.test")
	if n := deadErrors(); n != 4 {
		t.Errorf("after the down time the dead upstream was tried %v times in all, want 4", n)
	}
}
