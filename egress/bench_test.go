package egress

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
)

// benchProxy starts a connect proxy whose single rule lists 1,000 names
// plus the bench names, resolving through an in-memory table.
func benchProxy(b *testing.B, port int, tlsOn bool) *Proxy {
	b.Helper()
	names := make([]string, 0, 1002)
	for i := range 1000 {
		names = append(names, fmt.Sprintf("svc%d.allowed.example", i))
	}
	names = append(names, "bench.test")
	g := &guardTable{answers: map[string][]netip.Addr{"bench.test": {netip.MustParseAddr("127.0.0.1")}}, given: map[string]bool{}}
	yaml := fmt.Sprintf(`
egress:
  listeners: [{name: c, mode: connect, address: "127.0.0.1:0"}]
  limits: {max_connections_per_source: 100000, max_connections: 100000}
  rules: [{name: r, sni: [%s], ports: [%d], cidrs: [127.0.0.0/8], tls: %v}]
`, strings.Join(names, ", "), port, tlsOn)
	cfg, err := configs.Parse("bench.yaml", []byte(yaml), nil)
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(cfg, Deps{Resolver: g, Logger: slog.New(slog.DiscardHandler), Metrics: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Shutdown(b.Context()) })
	return p
}

func connectTunnel(b *testing.B, proxy, target string) net.Conn {
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		b.Fatal(err)
	}
	io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\n\r\n")
	// The reply is exactly this line plus an empty line.
	want := "HTTP/1.1 200 Connection established\r\n\r\n"
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
		b.Fatalf("CONNECT: %q %v", buf, err)
	}
	return c
}

// BenchmarkNewTLSConn: one op = a new TCP connection, a full TLS 1.3
// handshake (X25519, ECDSA P-256, no resumption) with the origin and one
// GET. "direct" is the same without the proxy.
func BenchmarkNewTLSConn(b *testing.B) {
	pk := newPKI(&testing.T{}, "bench.test")
	port := startOrigin(&testing.T{}, pk)
	target := "bench.test:" + strconv.Itoa(port)
	tc := &tls.Config{ServerName: "bench.test", RootCAs: pk.caPool, CurvePreferences: []tls.CurveID{tls.X25519}, ClientSessionCache: nil}
	get := func(c net.Conn) {
		t := tls.Client(c, tc)
		io.WriteString(t, "GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(t), nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		t.Close()
	}
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				b.Fatal(err)
			}
			get(c)
		}
	})
	b.Run("connect", func(b *testing.B) {
		p := benchProxy(b, port, true)
		addr := p.Addr("c").String()
		for b.Loop() {
			get(connectTunnel(b, addr, target))
		}
	})
}

// BenchmarkBulk: one op = 64 MiB from a TCP source through a tunnel
// (tls: false, so the proxy only splices) or directly.
func BenchmarkBulk(b *testing.B) {
	const size = 64 << 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.CopyN(c, zeroReader{}, size)
				c.Close()
			}()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	read := func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		if n != size {
			b.Fatalf("read %d", n)
		}
	}
	b.Run("direct", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			read(c)
		}
	})
	b.Run("connect", func(b *testing.B) {
		p := benchProxy(b, port, false)
		addr := p.Addr("c").String()
		b.SetBytes(size)
		for b.Loop() {
			read(connectTunnel(b, addr, "bench.test:"+strconv.Itoa(port)))
		}
	})
}

// BenchmarkDecide: the rule stage against a 1,000-name allowlist.
func BenchmarkDecide(b *testing.B) {
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("svc%d.allowed.example", i)
	}
	cfg, err := configs.Parse("b.yaml", []byte(fmt.Sprintf(`
egress:
  listeners: [{name: c, mode: connect, address: "127.0.0.1:0"}]
  groups: [{name: g, cidrs: [10.0.0.0/8]}]
  rules:
    - {name: deny, action: DENY, sni: ["*.evil.example"]}
    - {name: r, from: [g], sni: [%s, "*.googleapis.com"]}
`, strings.Join(names, ", "))), nil)
	if err != nil {
		b.Fatal(err)
	}
	rt, err := compile(cfg, &Deps{})
	if err != nil {
		b.Fatal(err)
	}
	s := source{addr: netip.MustParseAddr("10.1.2.3")}
	for b.Loop() {
		n, _ := normalizeName("svc500.allowed.example")
		if !rt.decide(s, target{name: n, port: 443, tls: true}).allow {
			b.Fatal("denied")
		}
	}
}

// BenchmarkRecords: the decision and close records of one allowed
// connection, formatted by slog's JSON handler (to io.Discard), and
// their metrics.
func BenchmarkRecords(b *testing.B) {
	cfg, err := configs.Parse("b.yaml", []byte(`
egress:
  listeners: [{name: c, mode: connect, address: "127.0.0.1:0"}]
  rules: [{name: r, sni: [bench.test]}]
`), nil)
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(cfg, Deps{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	rt := p.rt.Load()
	var lr *listenerRT
	for _, l := range rt.listeners {
		lr = l
	}
	tmpl := record{id: 1, listener: lr, start: time.Now(), src: netip.MustParseAddrPort("10.1.2.3:40000"),
		sni: "bench.test", host: "bench.test", port: 443, resolved: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
		dialled: netip.MustParseAddrPort("192.0.2.1:443"), dec: decision{allow: true, rule: rt.allow[0], reason: ReasonAllowed}, up: 1234, down: 56789}
	b.ReportAllocs()
	for b.Loop() {
		rec := new(record) // one per connection, as in handle
		*rec = tmpl
		p.logDecision(rec)
		p.logClose(rec)
	}
}
