package egress

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/ztgate/ztgate/configs"
)

// guardTable stands in for dnsguard's resolved-address table (dnsguard is
// another package; egress may not import it). It resolves from a map and
// remembers what it answered to whom, as dnsguard does.
type guardTable struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
	given   map[string]bool // client|name|addr
}

func (g *guardTable) Resolve(_ context.Context, client netip.Addr, name string) ([]netip.Addr, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	a, ok := g.answers[name]
	if !ok {
		return nil, fmt.Errorf("NXDOMAIN %s", name)
	}
	return append([]netip.Addr(nil), a...), nil
}

func (g *guardTable) give(client, name, addr string) {
	g.mu.Lock()
	g.given[client+"|"+name+"|"+addr] = true
	g.mu.Unlock()
}

func (g *guardTable) Resolved(client netip.Addr, name string, addr netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.given[client.String()+"|"+name+"|"+addr.String()]
}

var (
	_ Resolver        = (*guardTable)(nil)
	_ ResolvedChecker = (*guardTable)(nil)
)

func TestRequireDNSGuard(t *testing.T) {
	pk := newPKI(t, "seen.test", "unseen.test")
	port := startOrigin(t, pk)
	g := &guardTable{
		answers: map[string][]netip.Addr{"seen.test": {netip.MustParseAddr("127.0.0.1")}, "unseen.test": {netip.MustParseAddr("127.0.0.1")}},
		given:   map[string]bool{},
	}
	g.give("127.0.0.1", "seen.test", "127.0.0.1")
	yaml := fmt.Sprintf(`
egress:
  listeners: [{name: c, mode: connect, address: "127.0.0.1:0"}]
  require_dns_guard: true
  rules: [{name: r, sni: [seen.test, unseen.test], ports: [%d], cidrs: [127.0.0.0/8]}]
`, port)
	cfg, _ := configs.Parse("t.yaml", []byte(yaml), nil)
	if _, err := New(cfg, Deps{Resolver: g}); err == nil || !strings.Contains(err.Error(), "require_dns_guard") {
		t.Fatalf("New without a ResolvedChecker: %v", err)
	}
	e := startProxy(t, yaml, Deps{Resolver: g, Resolved: g})
	addr := e.p.Addr("c").String()
	c, status := dialConnect(t, addr, fmt.Sprintf("unseen.test:%d", port))
	c.Close()
	if status != 403 {
		t.Fatalf("unseen.test: %d", status)
	}
	e.rec.wait(t, MsgDecision, map[string]string{FieldHost: "unseen.test", FieldReason: "not_resolved_by_dns_guard"})
	c, status = dialConnect(t, addr, fmt.Sprintf("seen.test:%d", port))
	defer c.Close()
	if status != 200 {
		t.Fatalf("seen.test: %d", status)
	}
}

// TestIdleTimeout: a tunnel nobody sends on is closed by the idle timer
// and the close record is written.
func TestIdleTimeout(t *testing.T) {
	pk := newPKI(t, "a.test")
	port := startOrigin(t, pk)
	g := &guardTable{answers: map[string][]netip.Addr{"a.test": {netip.MustParseAddr("127.0.0.1")}}, given: map[string]bool{}}
	e := startProxy(t, fmt.Sprintf(`
egress:
  listeners: [{name: c, mode: connect, address: "127.0.0.1:0"}]
  limits: {idle_timeout: 50ms}
  rules: [{name: r, sni: [a.test], ports: [%d], cidrs: [127.0.0.0/8], tls: false}]
`, port), Deps{Resolver: g})
	c, status := dialConnect(t, e.p.Addr("c").String(), fmt.Sprintf("a.test:%d", port))
	defer c.Close()
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	// tls: false, so the tunnel is spliced at once; nothing is sent, and
	// the proxy must close it: ReadAll returns when it does.
	io.ReadAll(c)
	e.rec.wait(t, MsgClose, map[string]string{FieldDecision: "allow", FieldHost: "a.test", FieldBytesUp: "0"})
}
