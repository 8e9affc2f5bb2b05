package ipset

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestContains(t *testing.T) {
	s := New([]netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.0.2.1/32"),
		netip.MustParsePrefix("192.0.2.2/32"), // adjacent: merged
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("::ffff:198.51.100.0/120"), // mapped: stored as IPv4
		netip.MustParsePrefix("255.255.255.255/32"),
		netip.MustParsePrefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"),
	})
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"10.0.0.0", true}, {"10.255.255.255", true}, {"11.0.0.0", false}, {"9.255.255.255", false},
		{"192.0.2.1", true}, {"192.0.2.2", true}, {"192.0.2.3", false}, {"192.0.2.0", false},
		{"2001:db8::1", true}, {"2001:db9::", false}, {"2001:db7:ffff::", false},
		{"198.51.100.7", true}, {"::ffff:198.51.100.7", true}, {"::ffff:10.1.2.3", true},
		{"255.255.255.255", true}, {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true}, {"::1", false},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			if got := s.Contains(netip.MustParseAddr(tc.addr)); got != tc.want {
				t.Errorf("Contains(%s) = %v, want %v", tc.addr, got, tc.want)
			}
		})
	}
	if s.Contains(netip.Addr{}) {
		t.Error("the zero Addr must be in no set")
	}
	var nilSet *Set
	if nilSet.Contains(netip.MustParseAddr("10.0.0.1")) || nilSet.Len() != 0 {
		t.Error("a nil set is empty")
	}
	if s.Ranges() != 6 {
		t.Errorf("Ranges() = %d, want 6 (the two adjacent /32s merged)", s.Ranges())
	}
}

func TestAllAndZero(t *testing.T) {
	s := New([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")})
	for _, a := range []string{"0.0.0.0", "1.2.3.4", "255.255.255.255", "::", "2001:db8::1", "ffff::1"} {
		if !s.Contains(netip.MustParseAddr(a)) {
			t.Errorf("%s not in 0/0", a)
		}
	}
}

func randPrefixes(r *rand.Rand, n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range out {
		if r.IntN(4) == 0 {
			var b [16]byte
			for j := range b {
				b[j] = byte(r.IntN(256))
			}
			b[0] = 0x20
			out[i] = netip.PrefixFrom(netip.AddrFrom16(b), 16+r.IntN(113)).Masked()
			continue
		}
		b := [4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}
		out[i] = netip.PrefixFrom(netip.AddrFrom4(b), 8+r.IntN(25)).Masked()
	}
	return out
}

// TestAgainstLinearScan checks the merged ranges against the obvious
// definition on random sets and addresses, including the range edges.
func TestAgainstLinearScan(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		ps := randPrefixes(r, 1+r.IntN(300))
		s := New(ps)
		probe := func(a netip.Addr) {
			want := false
			for _, p := range ps {
				if p.Contains(a) {
					want = true
					break
				}
			}
			if got := s.Contains(a); got != want {
				t.Fatalf("round %d: Contains(%s) = %v, want %v", round, a, got, want)
			}
		}
		for _, p := range ps {
			probe(p.Addr())
			probe(p.Addr().Prev())
			probe(lastAddr(p))
			probe(lastAddr(p).Next())
		}
		for _, p := range randPrefixes(r, 200) {
			probe(p.Addr())
		}
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func BenchmarkContains(b *testing.B) {
	for _, n := range []int{10, 10000} {
		r := rand.New(rand.NewPCG(3, 4))
		s := New(randPrefixes(r, n))
		addrs := make([]netip.Addr, 1024)
		for i, p := range randPrefixes(r, len(addrs)) {
			addrs[i] = p.Addr()
		}
		b.Run(fmt.Sprintf("cidrs=%d", n), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				s.Contains(addrs[i&1023])
			}
		})
	}
}
