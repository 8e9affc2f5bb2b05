package dnsguard

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// Benchmarks of the in-process answer path (no sockets). Run with
//   go test ./dnsguard -run '^$' -bench . -benchmem
// The dnsperf comparison against CoreDNS and dnsmasq is bench/dns/.

func benchServer(b *testing.B, tunneling string) *Server {
	clk := newClock()
	s, _ := newOfflineServer(b, "  rate_limit: {qps: 10000000, burst: 10000000}\n"+tunneling, clk)
	return s
}

func BenchmarkAnswerCacheHit(b *testing.B) {
	for _, mode := range []struct{ name, cfg string }{
		{"detection-on", ""},
		{"detection-off", "  tunneling: {mode: off}\n"},
	} {
		b.Run(mode.name, func(b *testing.B) {
			s := benchServer(b, mode.cfg)
			names := make([]*dns.Msg, 500)
			for i := range names {
				m := new(dns.Msg)
				m.SetQuestion(fmt.Sprintf("www.host%d.example.", i), dns.TypeA)
				names[i] = m
				s.answer(context.Background(), mustAddr("10.0.0.1"), false, m, nil)
			}
			buf := make([]byte, 0, 512)
			client := mustAddr("10.0.0.1")
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				out := s.answer(context.Background(), client, false, names[i%len(names)], buf)
				if out.reason != ReasonCache {
					b.Fatalf("not a cache hit: %s", out.reason)
				}
				buf = out.wire[:0]
				i++
			}
		})
	}
}

func BenchmarkAnswerCacheMiss(b *testing.B) {
	for _, mode := range []struct{ name, cfg string }{
		{"detection-on", ""},
		{"detection-off", "  tunneling: {mode: off}\n"},
	} {
		b.Run(mode.name, func(b *testing.B) {
			s := benchServer(b, mode.cfg)
			client := mustAddr("10.0.0.1")
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				m := new(dns.Msg)
				m.SetQuestion(fmt.Sprintf("h%d.d%d.example.", i, i%1000), dns.TypeA)
				s.answer(context.Background(), netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), false, m, nil)
				i++
			}
			_ = client
		})
	}
}

func BenchmarkResolved(b *testing.B) {
	s := benchServer(b, "")
	client := mustAddr("10.0.0.1")
	if _, err := s.Resolve(context.Background(), client, "www.example.com"); err != nil {
		b.Fatal(err)
	}
	dst := mustAddr("192.0.2.1")
	b.ReportAllocs()
	for b.Loop() {
		if !s.Resolved(client, "www.example.com", dst) {
			b.Fatal("not resolved")
		}
	}
}
