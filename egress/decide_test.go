package egress

import (
	"net/netip"
	"testing"

	"github.com/ztgate/ztgate/configs"
)

func compileYAML(t *testing.T, yaml string) *snapshot {
	t.Helper()
	cfg, err := configs.Parse("test.yaml", []byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := compile(cfg, &Deps{})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func TestDecide(t *testing.T) {
	rt := compileYAML(t, `
egress:
  listeners: [{name: c, mode: connect, address: "127.0.0.1:0"}]
  groups:
    - {name: web, cidrs: [10.1.0.0/16]}
    - {name: batch, cidrs: [10.2.0.0/16, "2001:db8:2::/48"]}
  public_resolvers: {except: [dns.quad9.net]}
  rules:
    - {name: no-evil, action: DENY, sni: ["*.evil.example"]}
    - {name: web-apis, from: [web], sni: ["*.googleapis.com", www.google.com, "bücher.example"]}
    - {name: batch-any, from: [batch], sni: ["*"], ports: [443, 8443]}
    - {name: spiffe, from: ["spiffe://example.org/ns/prod/*"], sni: [api.stripe.com]}
    - {name: google-dns, from: [web], sni: [dns.google]}
    - {name: plain, from: [web], sni: [mirror.example], tls: false}
    - {name: by-ip, from: [web], cidrs: [192.0.2.0/24]}
`)
	web := source{addr: netip.MustParseAddr("10.1.2.3")}
	batch := source{addr: netip.MustParseAddr("10.2.0.9")}
	batch6 := source{addr: netip.MustParseAddr("2001:db8:2::5")}
	other := source{addr: netip.MustParseAddr("10.9.9.9")}
	prod := source{addr: netip.MustParseAddr("10.9.9.9"), identity: "spiffe://example.org/ns/prod/sa/billing"}
	dev := source{addr: netip.MustParseAddr("10.9.9.9"), identity: "spiffe://example.org/ns/dev/sa/billing"}
	tlsT := func(name string, port uint16) target { return target{name: name, port: port, tls: true} }
	cases := []struct {
		name   string
		src    source
		t      target
		allow  bool
		rule   string
		reason Reason
	}{
		{"wildcard subdomain", web, tlsT("storage.googleapis.com", 443), true, "web-apis", ReasonAllowed},
		{"wildcard any depth", web, tlsT("a.b.googleapis.com", 443), true, "web-apis", ReasonAllowed},
		{"wildcard does not match apex", web, tlsT("googleapis.com", 443), false, "", ReasonNotAllowlisted},
		{"suffix is label-aligned", web, tlsT("evilgoogleapis.com", 443), false, "", ReasonNotAllowlisted},
		{"exact", web, tlsT("www.google.com", 443), true, "web-apis", ReasonAllowed},
		{"IDNA rule vs A-label", web, tlsT("xn--bcher-kva.example", 443), true, "web-apis", ReasonAllowed},
		{"default port only", web, tlsT("www.google.com", 8443), false, "", ReasonNotAllowlisted},
		{"other group", other, tlsT("www.google.com", 443), false, "", ReasonNotAllowlisted},
		{"deny wins over *", batch, tlsT("x.evil.example", 443), false, "no-evil", ReasonDenyRule},
		{"* allows", batch, tlsT("example.net", 8443), true, "batch-any", ReasonAllowed},
		{"IPv6 group", batch6, tlsT("example.net", 443), true, "batch-any", ReasonAllowed},
		{"DoH behind *", batch, tlsT("cloudflare-dns.com", 443), false, "batch-any", ReasonPublicResolver},
		{"DoH per-account subdomain behind *", batch, tlsT("abc123.dns.nextdns.io", 443), false, "batch-any", ReasonPublicResolver},
		{"DoH named exactly", web, tlsT("dns.google", 443), true, "google-dns", ReasonAllowed},
		{"DoH in except", batch, tlsT("dns.quad9.net", 443), true, "batch-any", ReasonAllowed},
		{"SPIFFE prefix", prod, tlsT("api.stripe.com", 443), true, "spiffe", ReasonAllowed},
		{"SPIFFE other namespace", dev, tlsT("api.stripe.com", 443), false, "", ReasonNotAllowlisted},
		{"tls false rule, plain traffic", web, target{name: "mirror.example", port: 80}, true, "plain", ReasonAllowed},
		{"tls false rule, TLS traffic", web, tlsT("mirror.example", 80), false, "", ReasonNotAllowlisted},
		{"IP literal by cidrs", web, target{ip: netip.MustParseAddr("192.0.2.7"), port: 443, tls: true}, true, "by-ip", ReasonAllowed},
		{"IP literal outside cidrs", web, target{ip: netip.MustParseAddr("198.51.100.7"), port: 443, tls: true}, false, "", ReasonNotAllowlisted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := rt.decide(tc.src, tc.t)
			if d.allow != tc.allow || d.ruleName() != tc.rule || d.reason != tc.reason {
				t.Fatalf("decide = allow:%v rule:%q reason:%s, want allow:%v rule:%q reason:%s",
					d.allow, d.ruleName(), d.reason, tc.allow, tc.rule, tc.reason)
			}
		})
	}
}

func TestNormalizeName(t *testing.T) {
	cases := []struct{ in, want string }{
		{"Example.COM.", "example.com"},
		{"bücher.example", "xn--bcher-kva.example"},
		{"XN--BCHER-KVA.example", "xn--bcher-kva.example"},
		{"a-b.c0.example", "a-b.c0.example"},
	}
	for _, tc := range cases {
		got, err := normalizeName(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("normalizeName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "a..b", "-a.example", "xn--zz.example", "1.2.3.4", "a b.example"} {
		if got, err := normalizeName(bad); err == nil {
			t.Errorf("normalizeName(%q) = %q, want an error", bad, got)
		}
	}
}

func TestParseTarget(t *testing.T) {
	cases := []struct {
		in   string
		host string
		ip   string
		port uint16
		ok   bool
	}{
		{"example.com:443", "example.com", "", 443, true},
		{"[2001:db8::1]:443", "", "2001:db8::1", 443, true},
		{"192.0.2.1:8443", "", "192.0.2.1", 8443, true},
		{"[::ffff:127.0.0.1]:443", "", "127.0.0.1", 443, true},
		{"example.com", "", "", 0, false},
		{"example.com:0", "", "", 0, false},
		{"example.com:+443", "", "", 0, false},
		{"example.com:65536", "", "", 0, false},
		{":443", "", "", 0, false},
		{"[fe80::1%eth0]:443", "", "", 0, false},
		{"a/b:443", "", "", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			host, ip, port, err := parseTarget(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v", err)
			}
			if !tc.ok {
				return
			}
			if host != tc.host || port != tc.port || (tc.ip != "" && ip != netip.MustParseAddr(tc.ip)) {
				t.Fatalf("got %q %v %d", host, ip, port)
			}
		})
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"example.com:443", "[2001:db8::1]:443", "1.2.3.4:1", "xn--bcher-kva.example:443", "[::ffff:169.254.169.254]:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, ip, port, err := parseTarget(s)
		if err != nil {
			return
		}
		if port == 0 || (host == "") == !ip.IsValid() {
			t.Fatalf("parseTarget(%q) = %q %v %d", s, host, ip, port)
		}
		if ip.Is4In6() {
			t.Fatalf("mapped address %v not unmapped", ip)
		}
		if host != "" {
			normalizeName(host) // must not panic
		}
	})
}

func TestTopDeniedBounded(t *testing.T) {
	td := newTopDenied(3)
	for i := 0; i < 60; i++ {
		td.add("a.example", 443, ReasonNotAllowlisted)
	}
	td.add("b.example", 443, ReasonNotAllowlisted)
	td.add("b.example", 443, ReasonNotAllowlisted)
	for i := 0; i < 100; i++ {
		td.add("x"+string(rune('a'+i%26))+".example", 443, ReasonNoSNI)
	}
	if len(td.m) > 3 {
		t.Fatalf("table grew to %d", len(td.m))
	}
	top := td.top(1)
	// Space-Saving keeps every name counted more than total/capacity
	// (here 162/3) times, with its exact count if it never left.
	if top[0].Name != "a.example" || top[0].Count != 60 {
		t.Fatalf("top = %+v", top)
	}
}
