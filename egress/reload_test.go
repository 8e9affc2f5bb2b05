package egress

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
)

func reloadConfig(t *testing.T, dnsAddr string, port int, names string, extraListener string) *configs.Config {
	t.Helper()
	cfg, err := configs.Parse("reload.yaml", []byte(fmt.Sprintf(`
egress:
  listeners:
    - {name: connect, mode: connect, address: "127.0.0.1:0"}
%s
  resolver: {address: %q}
  rules:
    - {name: origin, sni: [%s], ports: [%d], cidrs: [127.0.0.0/8]}
`, extraListener, dnsAddr, names, port)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestApplyUnderTraffic: a tunnel opened before a reload keeps working
// on its old snapshot; new connections use the new rules on the same
// socket; a config that fails to compile leaves the old one serving.
func TestApplyUnderTraffic(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	pk := newPKI(t, "a.test", "b.test")
	port := startOrigin(t, pk)
	dnsAddr := startDNS(t, map[string][]string{"a.test": {"127.0.0.1"}, "b.test": {"127.0.0.1"}})
	rec := newRecorder()
	p, err := New(reloadConfig(t, dnsAddr, port, "a.test", ""), Deps{Logger: slogFor(rec)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	addr := p.Addr("connect").String()

	// Open a tunnel to a.test and keep it.
	c, status := dialConnect(t, addr, fmt.Sprintf("a.test:%d", port))
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	old := tls.Client(c, &tls.Config{ServerName: "a.test", RootCAs: pk.caPool})
	if err := old.Handshake(); err != nil {
		t.Fatal(err)
	}

	// Reload: only b.test now.
	if err := p.Apply(reloadConfig(t, dnsAddr, port, "b.test", "")); err != nil {
		t.Fatal(err)
	}
	if got := p.Addr("connect").String(); got != addr {
		t.Fatalf("listener socket changed: %s → %s", addr, got)
	}
	// The old tunnel still works.
	fmt.Fprintf(old, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(old), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("in-flight tunnel after reload: %v", err)
	}
	resp.Body.Close()
	// New connections see the new rules.
	if c2, status := dialConnect(t, addr, fmt.Sprintf("a.test:%d", port)); status != http.StatusForbidden {
		t.Fatalf("a.test after reload: %d", status)
	} else {
		c2.Close()
	}
	if c3, status := dialConnect(t, addr, fmt.Sprintf("b.test:%d", port)); status != 200 {
		t.Fatalf("b.test after reload: %d", status)
	} else {
		c3.Close()
	}
	// A config whose mTLS files do not load is refused; b.test still works.
	bad := reloadConfig(t, dnsAddr, port, "a.test", "")
	bad.Egress.Listeners[0].MTLS = &configs.EgressMTLS{Cert: "/nonexistent.pem", Key: "/nonexistent.key", ClientCA: "/nonexistent-ca.pem"}
	if err := p.Apply(bad); err == nil || !strings.Contains(err.Error(), "mtls") {
		t.Fatalf("Apply(bad) = %v", err)
	}
	if c4, status := dialConnect(t, addr, fmt.Sprintf("b.test:%d", port)); status != 200 {
		t.Fatalf("b.test after failed reload: %d", status)
	} else {
		c4.Close()
	}
	// A listener added by reload opens; removing it closes it.
	if err := p.Apply(reloadConfig(t, dnsAddr, port, "b.test", `    - {name: extra, mode: connect, address: "127.0.0.1:0"}`)); err != nil {
		t.Fatal(err)
	}
	extra := p.Addr("extra")
	if extra == nil {
		t.Fatal("extra listener not opened")
	}
	if err := p.Apply(reloadConfig(t, dnsAddr, port, "b.test", "")); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", extra.String()); err == nil {
		t.Fatal("removed listener still accepts")
	}
	old.Close()

	// Admin endpoint lists the denied a.test.
	w := httptest.NewRecorder()
	p.AdminHandler().ServeHTTP(w, httptest.NewRequest("GET", "/egress?n=5", nil))
	var st AdminStatus
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range st.TopDenied {
		found = found || d.Name == "a.test" && d.LastReason == ReasonNotAllowlisted && d.Count == 1
	}
	if !found {
		t.Fatalf("admin does not list the denied a.test: %s", w.Body.String())
	}

	ctx, cancel := contextWithTimeout(5 * time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// No goroutine of the proxy survives Shutdown (the test's own
	// servers are still up, so allow for those).
	waitGoroutines(t, goroutines+12)
}

func waitGoroutines(t *testing.T, max int) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if runtime.NumGoroutine() <= max {
			return
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond) // polling a count: no event to wait on
	}
	buf := make([]byte, 1<<16)
	n := runtime.Stack(buf, true)
	t.Fatalf("%d goroutines left (max %d):\n%s", runtime.NumGoroutine(), max, buf[:n])
}

// TestMTLSIdentity: on an mTLS listener the client certificate's SPIFFE
// ID is the source identity that rules match.
func TestMTLSIdentity(t *testing.T) {
	pk := newPKI(t, "a.test", "proxy.test")
	port := startOrigin(t, pk)
	dnsAddr := startDNS(t, map[string][]string{"a.test": {"127.0.0.1"}})
	certFile, keyFile := pk.writePair(t, "proxy", pk.tlsCert)
	e := startProxy(t, fmt.Sprintf(`
egress:
  listeners:
    - name: mtls
      mode: connect
      address: "127.0.0.1:0"
      mtls: {cert: %q, key: %q, client_ca: %q}
  resolver: {address: %q}
  rules:
    - {name: billing, from: ["spiffe://example.org/ns/prod/sa/billing"], sni: [a.test], ports: [%d], cidrs: [127.0.0.0/8]}
`, certFile, keyFile, pk.caFile, dnsAddr, port), Deps{})
	addr := e.p.Addr("mtls").String()
	cases := []struct {
		name, id string
		status   int
	}{
		{"allowed identity", "spiffe://example.org/ns/prod/sa/billing", 200},
		{"other identity", "spiffe://example.org/ns/prod/sa/web", 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cc := pk.leaf(t, nil, []string{tc.id})
			c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "proxy.test", RootCAs: pk.caPool, Certificates: []tls.Certificate{cc}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "CONNECT a.test:%d HTTP/1.1\r\n\r\n", port)
			resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
			if err != nil || resp.StatusCode != tc.status {
				t.Fatalf("CONNECT: %v %v", resp, err)
			}
			want := map[string]string{FieldIdentity: tc.id, FieldDecision: "deny", FieldReason: "not_allowlisted"}
			if tc.status == 200 {
				inner := tls.Client(c, &tls.Config{ServerName: "a.test", RootCAs: pk.caPool})
				if err := inner.Handshake(); err != nil {
					t.Fatalf("TLS through the mTLS tunnel: %v", err)
				}
				want = map[string]string{FieldIdentity: tc.id, FieldDecision: "allow", FieldRule: "billing"}
			}
			e.rec.wait(t, MsgDecision, want)
		})
	}
	t.Run("no client certificate", func(t *testing.T) {
		if c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "proxy.test", RootCAs: pk.caPool}); err == nil {
			// TLS 1.3: the server's refusal arrives with the first read.
			io.ReadAll(c)
			c.Close()
		}
		e.rec.wait(t, MsgDecision, map[string]string{FieldReason: "client_tls_failed"})
	})
}

// TestNewTwiceOnOneRegistry: egress turned off and on again by reloads
// creates a second Proxy on the process's registry.
func TestNewTwiceOnOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := reloadConfig(t, "127.0.0.1:53", 443, "a.test", "")
	for i := 0; i < 2; i++ {
		if _, err := New(cfg, Deps{Metrics: reg}); err != nil {
			t.Fatalf("New #%d: %v", i+1, err)
		}
	}
}
