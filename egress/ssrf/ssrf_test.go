package ssrf

import (
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		addr   string
		want   Class
		reason string
	}{
		{"93.184.216.34", Public, ""},
		{"2606:2800:220:1:248:1893:25c8:1946", Public, ""},
		{"127.0.0.1", Loopback, "private_address"},
		{"127.255.0.9", Loopback, "private_address"},
		{"::1", Loopback, "private_address"},
		{"10.1.2.3", Private, "private_address"},
		{"172.16.0.1", Private, "private_address"},
		{"192.168.1.1", Private, "private_address"},
		{"fd12:3456::1", Private, "private_address"},
		{"169.254.1.1", LinkLocal, "private_address"},
		{"fe80::1", LinkLocal, "private_address"},
		{"100.64.0.1", CGNAT, "private_address"},
		{"224.0.0.1", Multicast, "reserved_address"},
		{"ff02::1", Multicast, "reserved_address"},
		{"169.254.169.254", Metadata, "metadata_address"},
		{"fd00:ec2::254", Metadata, "metadata_address"},
		{"100.100.100.200", Metadata, "metadata_address"},
		{"168.63.129.16", Metadata, "metadata_address"},
		{"0.0.0.0", Unspecified, "reserved_address"},
		{"::", Unspecified, "reserved_address"},
		{"0.1.2.3", Reserved, "reserved_address"},
		{"255.255.255.255", Reserved, "reserved_address"},
		{"240.0.0.1", Reserved, "reserved_address"},
		{"192.0.2.10", Reserved, "reserved_address"},
		{"2001:db8::1", Reserved, "reserved_address"},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", Reserved, "reserved_address"}, // Teredo
		// IPv4 embedded in IPv6 is classified by the IPv4 address.
		{"::ffff:127.0.0.1", Loopback, "private_address"},
		{"::ffff:169.254.169.254", Metadata, "metadata_address"},
		{"::127.0.0.1", Loopback, "private_address"},
		{"64:ff9b::a9fe:a9fe", Metadata, "metadata_address"}, // NAT64 169.254.169.254
		{"64:ff9b::10.0.0.1", Private, "private_address"},
		{"64:ff9b::93.184.216.34", Public, ""},
		{"2002:7f00:1::1", Loopback, "private_address"}, // 6to4 of 127.0.0.1
		{"2002:c0a8:101::1", Private, "private_address"},
		{"fe80::1%eth0", LinkLocal, "private_address"},
	}
	for _, tc := range cases {
		t.Run(tc.addr, func(t *testing.T) {
			a := netip.MustParseAddr(tc.addr)
			got := Classify(a)
			if got != tc.want {
				t.Fatalf("Classify(%s) = %s, want %s", tc.addr, got, tc.want)
			}
			if got.Reason() != tc.reason {
				t.Fatalf("Reason = %q, want %q", got.Reason(), tc.reason)
			}
		})
	}
	if Classify(netip.Addr{}) != Invalid {
		t.Fatal("zero Addr must be Invalid")
	}
}

func FuzzClassify(f *testing.F) {
	f.Add([]byte{127, 0, 0, 1})
	f.Add(netip.MustParseAddr("64:ff9b::a9fe:a9fe").AsSlice())
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		c := Classify(a)
		if a.Is4In6() && c != Classify(a.Unmap()) {
			t.Fatalf("mapped %s classified %s, unmapped %s", a, c, Classify(a.Unmap()))
		}
		if a.IsLoopback() && c == Public {
			t.Fatalf("%s is loopback", a)
		}
	})
}
