package dnsguard

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ztgate/ztgate/dnsguard/cache"
)

// FuzzAnswer feeds arbitrary DNS messages through the whole answer path
// (policy, detector, cache, synthetic upstream). It must never panic,
// and every reply must parse and carry the query's ID. Seeds are in
// testdata/fuzz/FuzzAnswer.
func FuzzAnswer(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"www.example.com.", dns.TypeA}, {"_ta-4f66.", dns.TypeNULL}, {"/QEAAAABBA.t2.test.", dns.TypeTXT},
		{"blocked.example.test.", dns.TypeAAAA}, {".", dns.TypeNS}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(1232, true)
		b, _ := m.Pack()
		f.Add(b, false)
	}
	clk := newClock()
	s, _ := newOfflineServer(f, "  groups: [{name: all, deny: [blocked.example.test, \"*.bad.test\"]}]\n", clk)
	f.Fuzz(func(t *testing.T, wire []byte, tcp bool) {
		var req dns.Msg
		if err := req.Unpack(wire); err != nil {
			return // the listener drops what miekg cannot parse
		}
		out := s.answer(t.Context(), netip.MustParseAddr("10.0.0.1"), tcp, &req, nil)
		clk.Add(time.Millisecond)
		if out.wire == nil {
			if !req.Response {
				t.Fatalf("no reply to a query: %v", req)
			}
			return
		}
		var r dns.Msg
		if err := r.Unpack(out.wire); err != nil {
			t.Fatalf("reply does not parse: %v\nquery: %v", err, req)
		}
		if r.Id != req.Id || !r.Response {
			t.Fatalf("reply id %d response=%v for query id %d", r.Id, r.Response, req.Id)
		}
		if !tcp && len(out.wire) > 65535 {
			t.Fatalf("UDP reply of %d bytes", len(out.wire))
		}
	})
}

// FuzzCacheEntry walks arbitrary bytes as a cached response: NewEntry
// rejects or accepts them without panicking, and an accepted entry can
// be written for a client.
func FuzzCacheEntry(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("www.example.test.", dns.TypeA)
	rr, _ := dns.NewRR("www.example.test. 300 IN A 192.0.2.1")
	m.Answer = []dns.RR{rr}
	m.Response = true
	b, _ := m.Pack()
	f.Add(b, "WWW.example.test.")
	f.Add([]byte{0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0xc0, 12}, "x.")
	f.Fuzz(func(t *testing.T, wire []byte, qname string) {
		now := time.Unix(1000, 0)
		e, err := cache.NewEntry(wire, 0, time.Minute, 0, 86400, nil, now)
		if err != nil {
			return
		}
		out := e.Wire(nil, 7, qname, true, false, now.Add(10*time.Second), false)
		if len(out) != len(wire) {
			t.Fatalf("Wire changed the length: %d → %d", len(wire), len(out))
		}
	})
}
