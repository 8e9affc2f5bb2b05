package cache

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func entry(t *testing.T, ttl uint32, now time.Time) *Entry {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("www.example.test.", dns.TypeA)
	m.Response = true
	rr, _ := dns.NewRR("www.example.test. 300 IN A 192.0.2.1")
	rr.Header().Ttl = ttl
	m.Answer = []dns.RR{rr}
	m.Compress = true
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEntry(b, 0, time.Duration(ttl)*time.Second, 0, 86400, []netip.Addr{netip.MustParseAddr("192.0.2.1")}, now)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestAgingCaseAndStale(t *testing.T) {
	now := time.Unix(1000, 0)
	c := New(100)
	k := Key{Name: "www.example.test", Type: dns.TypeA, Class: dns.ClassINET}
	c.Set(k, entry(t, 300, now))
	for _, tc := range []struct {
		name      string
		at        time.Duration
		staleFor  time.Duration
		wantFound bool
		wantFresh bool
		wantTTL   uint32
	}{
		{"fresh", 100 * time.Second, 0, true, true, 200},
		{"expired-no-stale", 301 * time.Second, 0, false, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.Set(k, entry(t, 300, now))
			e, fresh := c.Get(k, now.Add(tc.at), tc.staleFor)
			if (e != nil) != tc.wantFound || fresh != tc.wantFresh {
				t.Fatalf("found=%v fresh=%v", e != nil, fresh)
			}
			if e == nil {
				return
			}
			var m dns.Msg
			if err := m.Unpack(e.Wire(nil, 42, "WWW.Example.TEST.", true, false, now.Add(tc.at), false)); err != nil {
				t.Fatal(err)
			}
			if m.Id != 42 || m.Question[0].Name != "WWW.Example.TEST." || m.Answer[0].Header().Ttl != tc.wantTTL {
				t.Fatalf("id %d, qname %q, ttl %d", m.Id, m.Question[0].Name, m.Answer[0].Header().Ttl)
			}
		})
	}
	c.Set(k, entry(t, 300, now))
	if e, fresh := c.Get(k, now.Add(400*time.Second), time.Hour); e == nil || fresh {
		t.Fatalf("stale lookup: %v %v", e, fresh)
	}
}

func TestCap(t *testing.T) {
	now := time.Unix(1000, 0)
	c := New(32)
	for i := 0; i < 1000; i++ {
		c.Set(Key{Name: string(rune(0x100 + i)), Type: 1, Class: 1}, entry(t, 60, now))
	}
	if n, b := c.Size(); n > 32 || b <= 0 {
		t.Fatalf("size %d entries %d bytes, cap 32", n, b)
	}
}
