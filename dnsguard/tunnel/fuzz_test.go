package tunnel

import (
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzExtract checks that feature extraction never fails on any name in
// presentation format and keeps its invariants; the tracker takes the
// result without panicking. Seeds are in testdata/fuzz/FuzzExtract.
func FuzzExtract(f *testing.F) {
	for _, s := range []string{"www.example.com.", "", ".", "\\", "a\\", "\\999.t.test", "a\\.b.example.org",
		"zbguaA-Aaahhh-Drink-mal-ein-J\\228germeister-.t.test.", "/QEAAAABBA.t2.test", "com", "..", "a..b"} {
		f.Add(s, uint16(1))
	}
	prof, err := NewProfile(defaultTunneling())
	if err != nil {
		f.Fatal(err)
	}
	tr := NewTracker(64)
	now := time.Unix(1, 0)
	f.Fuzz(func(t *testing.T, name string, qtype uint16) {
		ft := Extract(name, qtype)
		if ft.Score < 0 || ft.SubLen < 0 || ft.SubLen > len(ft.Name) || ft.MaxLabel > len(ft.Name) {
			t.Fatalf("bad features for %q: %+v", name, ft)
		}
		if ft.SubLen > 0 && ft.Name[ft.SubLen] != '.' {
			t.Fatalf("subdomain of %q does not end at a label boundary: %+v", name, ft)
		}
		if ft.Entropy < 0 || ft.Entropy > 8.0001 {
			t.Fatalf("entropy %v out of range", ft.Entropy)
		}
		if e := Escape(ft.Name); !utf8.ValidString(e) || strings.ContainsAny(e, "\x00\x7f") {
			t.Fatalf("Escape(%q) = %q is not clean", ft.Name, e)
		}
		tr.Observe(now, prof, netip.AddrFrom4([4]byte{10, 0, 0, byte(qtype)}), &ft)
		if n, _, _ := tr.Size(); n > 64 {
			t.Fatalf("tracker grew past its cap: %d", n)
		}
	})
}
