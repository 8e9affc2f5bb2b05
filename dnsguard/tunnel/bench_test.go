package tunnel

import (
	"net/netip"
	"testing"
	"time"
)

func BenchmarkExtract(b *testing.B) {
	for _, c := range []struct{ name, q string }{
		{"short", "www.example.com."},
		{"dkim", "fozx2iigcdxn54qimwcgtrwc2d6r6oqs._domainkey.example.com."},
		{"iodine", "rbead\\236bB\\203\\228\\2415\\218\\2363B\\203\\228\\2415\\218\\2363B\\203\\228\\2415\\218.t.test."},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Extract(c.q, 1)
			}
		})
	}
}

func BenchmarkObserve(b *testing.B) {
	p, _ := NewProfile(defaultTunneling())
	tr := NewTracker(100000)
	f := Extract("www.example.com.", 1)
	client := netip.MustParseAddr("10.0.0.1")
	now := time.Unix(1000, 0)
	b.ReportAllocs()
	for b.Loop() {
		tr.Observe(now, p, client, &f)
	}
}
