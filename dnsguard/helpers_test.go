package dnsguard

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ztgate/ztgate/configs"
)

// testUpstream is a small authoritative server for example.test on
// loopback (UDP and TCP on one port), built on miekg/dns.
type testUpstream struct {
	addr    string
	udp     *dns.Server
	tcp     *dns.Server
	mu      sync.Mutex
	counts  map[string]int // "name type proto" → queries seen
	sawECS  atomic.Bool
	handler func(w dns.ResponseWriter, r *dns.Msg) bool // optional override; true = handled
}

var testZone = buildZone()

// buildZone returns example.test as RFC 1035 text records by "name TYPE".
func buildZone() map[string][]string {
	testZone := map[string][]string{}
	big := strings.Repeat("x", 200)
	var bigTXT []string
	for i := 0; i < 12; i++ {
		bigTXT = append(bigTXT, fmt.Sprintf("big.example.test. 300 IN TXT \"%02d%s\"", i, big))
	}
	testZone["big.example.test. TXT"] = bigTXT
	testZone["www.example.test. A"] = []string{"www.example.test. 300 IN A 192.0.2.10", "www.example.test. 300 IN A 192.0.2.11"}
	testZone["www.example.test. AAAA"] = []string{"www.example.test. 300 IN AAAA 2001:db8::10"}
	testZone["short.example.test. A"] = []string{"short.example.test. 5 IN A 192.0.2.5"}
	testZone["example.test. MX"] = []string{"example.test. 300 IN MX 10 mail.example.test."}
	testZone["example.test. TXT"] = []string{"example.test. 300 IN TXT \"v=spf1 -all\""}
	testZone["_sip._tcp.example.test. SRV"] = []string{"_sip._tcp.example.test. 300 IN SRV 10 5 5060 sip.example.test."}
	testZone["_ta-4f66. NULL"] = []string{"_ta-4f66. 300 IN NULL"}
	return testZone
}

const testSOA = "example.test. 300 IN SOA ns.example.test. host.example.test. 1 7200 3600 1209600 60"

func startUpstream(t *testing.T) *testUpstream {
	t.Helper()
	u := &testUpstream{counts: map[string]int{}}
	// UDP and TCP on the same port: the TCP port may be taken by another
	// process's connection, so retry with a new UDP port.
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for try := 0; try < 20; try++ {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(u.serve)
	started := make(chan struct{}, 2)
	u.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { started <- struct{}{} }}
	u.tcp = &dns.Server{Listener: ln, Handler: h, NotifyStartedFunc: func() { started <- struct{}{} }}
	go u.udp.ActivateAndServe()
	go u.tcp.ActivateAndServe()
	<-started
	<-started
	t.Cleanup(u.stop)
	return u
}

func (u *testUpstream) stop() {
	u.udp.Shutdown()
	u.tcp.Shutdown()
}

// setHandler overrides answers (true = handled) from now on.
func (u *testUpstream) setHandler(h func(w dns.ResponseWriter, r *dns.Msg) bool) {
	u.mu.Lock()
	u.handler = h
	u.mu.Unlock()
}

func (u *testUpstream) count(name, qtype, proto string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counts[name+" "+qtype+" "+proto]
}

func (u *testUpstream) serve(w dns.ResponseWriter, r *dns.Msg) {
	proto := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		proto = "tcp"
	}
	q := r.Question[0]
	if o := r.IsEdns0(); o != nil {
		for _, e := range o.Option {
			if e.Option() == dns.EDNS0SUBNET {
				u.sawECS.Store(true)
			}
		}
	}
	u.mu.Lock()
	u.counts[strings.ToLower(q.Name)+" "+dns.TypeToString[q.Qtype]+" "+proto]++
	h := u.handler
	u.mu.Unlock()
	if h != nil && h(w, r) {
		return
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if rrs, ok := testZone[strings.ToLower(q.Name)+" "+dns.TypeToString[q.Qtype]]; ok {
		for _, s := range rrs {
			rr, err := dns.NewRR(s)
			if err != nil {
				panic(err)
			}
			m.Answer = append(m.Answer, rr)
		}
	} else {
		soa, _ := dns.NewRR(testSOA)
		m.Ns = []dns.RR{soa}
		if !strings.HasSuffix(strings.ToLower(q.Name), "www.example.test.") && !strings.HasSuffix(strings.ToLower(q.Name), "example.test.") || strings.Contains(strings.ToLower(q.Name), "nx") {
			m.Rcode = dns.RcodeNameError
		}
	}
	size := 512
	if o := r.IsEdns0(); o != nil {
		size = int(o.UDPSize())
		m.SetEdns0(1232, false)
	}
	if proto == "udp" {
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func parseCfg(t testing.TB, yaml string) *configs.Config {
	t.Helper()
	cfg, err := configs.Parse("test.yaml", []byte(yaml), nil)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// startServer starts dnsguard on 127.0.0.1:0 with the dns: body given
// (indented two spaces, without the listen key).
func startServer(t testing.TB, upstream string, body string, clk *clock) *Server {
	t.Helper()
	yaml := "dns:\n  listen: [\"127.0.0.1:0\"]\n  upstreams: [{address: \"" + upstream + "\"}]\n" + body
	deps := Deps{}
	if clk != nil {
		deps.Now = clk.Now
	}
	s, err := New(parseCfg(t, yaml), deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s
}

func hostPort(t testing.TB, addr string) (string, string) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

// dig runs dig (or kdig) against addr; every run is bounded.
func dig(t *testing.T, tool, addr string, args ...string) string {
	t.Helper()
	host, port := hostPort(t, addr)
	all := append([]string{"@" + host, "-p", port, "+time=3", "+tries=1"}, args...)
	if tool == "kdig" {
		all = append([]string{"@" + host, "-p", port, "+time=3", "+retry=0"}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, tool, all...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(all, " "), err, out)
	}
	return string(out)
}

// query sends one query with the miekg client.
func query(t testing.TB, addr, name string, qtype uint16, net string, edit func(*dns.Msg)) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edit != nil {
		edit(m)
	}
	c := &dns.Client{Net: net, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("query %s %s: %v", name, dns.TypeToString[qtype], err)
	}
	return r
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
