package configs

import (
	"strings"
	"testing"
	"time"
)

func TestDNSDefaults(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte("dns:\n  listen: 127.0.0.1:53\n  upstreams: [{address: \"10.0.0.2:53\"}]\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.DNS
	if !d.Enabled() || len(d.Listen) != 1 || d.Upstreams[0].Protocol != "udp" || d.Timeout != 2*time.Second ||
		d.Attempts != 3 || d.UDPSize != 1232 || d.ECS != "strip" || d.BlockResponse != "NXDOMAIN" {
		t.Errorf("top-level defaults: %+v", d)
	}
	if d.Cache.MaxEntries != 100000 || d.Cache.MaxTTL != 24*time.Hour || d.Cache.NegativeTTL != 5*time.Minute || d.Cache.ServeStale {
		t.Errorf("cache defaults: %+v", d.Cache)
	}
	if d.RateLimit.QPS != 200 || d.RateLimit.Burst != 400 || d.RateLimit.MaxClients != 65536 {
		t.Errorf("rate limit defaults: %+v", d.RateLimit)
	}
	tn := d.Tunneling
	if tn.Mode != TunnelBlock || tn.QueryScore != 4 || tn.InstantScore != 8 || tn.SuspiciousQueries != 6 ||
		tn.SuspiciousBytes != 768 || tn.DistinctSubdomains != 400 || tn.NameBytes != 16384 || tn.Window != time.Minute ||
		tn.Quarantine != 15*time.Minute || strings.Join(tn.RefuseTypes, ",") != "NULL,KEY,PRIVATE" || tn.MaxTracked != 100000 {
		t.Errorf("tunneling defaults (the documented default profile): %+v", tn)
	}
	if d.Resolved.Grace != time.Minute || d.Resolved.MaxEntries != 200000 {
		t.Errorf("resolved defaults: %+v", d.Resolved)
	}
	off, err := Parse("t.yaml", []byte("storage: /tmp\n"), nil)
	if err != nil || off.DNS.Enabled() {
		t.Errorf("no dns section: enabled=%v err=%v", off.DNS.Enabled(), err)
	}
	empty, err := Parse("t.yaml", []byte("dns: {}\n"), nil)
	if err != nil || empty.DNS.Enabled() {
		t.Errorf("empty dns section: enabled=%v err=%v", empty.DNS.Enabled(), err)
	}
}

func FuzzDNSPattern(f *testing.F) {
	for _, s := range []string{"example.com", "*.example.com", "a*.b", "", ".", "-a.b", "xn--bcher-kva.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckDNSPattern(s) == nil {
			rest := strings.TrimPrefix(s, "*.")
			if strings.Contains(rest, "*") || len(strings.TrimSuffix(rest, ".")) > 253 {
				t.Fatalf("accepted %q", s)
			}
		}
		DNSRefuseType(s)
	})
}
