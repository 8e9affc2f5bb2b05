package configs

import (
	"testing"
)

func TestEgressDefaults(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte("egress:\n  listeners: [{name: c, mode: connect, address: \"127.0.0.1:3128\"}]\n  rules:\n    - {name: a, sni: [x.example]}\n    - {name: p, sni: [y.example], tls: false}\n    - {name: d, action: DENY, sni: [z.example]}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Egress
	if e.Rules[0].Action != EgressAllow || len(e.Rules[0].Ports) != 1 || e.Rules[0].Ports[0] != 443 {
		t.Errorf("ALLOW rule defaults: %+v", e.Rules[0])
	}
	if e.Rules[1].Ports[0] != 80 {
		t.Errorf("tls: false default port: %+v", e.Rules[1])
	}
	if len(e.Rules[2].Ports) != 0 {
		t.Errorf("DENY rule must default to any port: %+v", e.Rules[2])
	}
	if e.ClientHello.NoSNI != HelloDeny || e.ClientHello.ECH != HelloDeny || !e.PublicResolvers.DenyEnabled() {
		t.Errorf("client_hello / public_resolvers defaults: %+v %+v", e.ClientHello, e.PublicResolvers)
	}
	off, err := Parse("t.yaml", []byte("storage: /tmp\n"), nil)
	if err != nil || off.Egress.Enabled() {
		t.Errorf("no egress section: enabled=%v err=%v", off.Egress.Enabled(), err)
	}
}
