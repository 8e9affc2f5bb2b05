package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go/http3"

	"github.com/ztgate/ztgate/configs"
)

// testCerts is a self-signed certificate for localhost, standing in for
// gateway/certs (tested on its own) so these tests exercise the core.
type testCerts struct {
	cert tls.Certificate
	pool *x509.CertPool
}

func newTestCerts(t testing.TB) *testCerts {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost", "api.example.com", "www.example.com", "a.b.example.com"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &testCerts{cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool: pool}
}

func (c *testCerts) TLSConfig(string) (*tls.Config, error) {
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{c.cert}}, nil
}
func (c *testCerts) HTTPChallengeHandler(next http.Handler) http.Handler { return next }
func (c *testCerts) Ready() error                                        { return nil }

type harness struct {
	t     *testing.T
	srv   *Server
	certs *testCerts
	reg   *prometheus.Registry
	logs  *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newHarness(t *testing.T, ext Extensions) *harness {
	t.Helper()
	h := &harness{t: t, certs: newTestCerts(t), reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := New(Deps{Logger: log, Metrics: NewMetrics(h.reg), Certs: h.certs, Extensions: ext})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if t.Failed() {
			lines := strings.Split(h.logs.String(), "\n")
			t.Logf("gateway logs (last 40 lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return h
}

func (h *harness) apply(yaml string) {
	h.t.Helper()
	cfg, err := configs.Parse("test.yaml", []byte(yaml), nil)
	if err != nil {
		h.t.Fatalf("config: %v", err)
	}
	if err := h.srv.Apply(cfg); err != nil {
		h.t.Fatalf("apply: %v", err)
	}
}

func (h *harness) client(proto string) *http.Client {
	tc := &tls.Config{RootCAs: h.certs.pool, ServerName: "localhost"}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: proto == "h2"}
	if proto == "h1" {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	if proto == "h2" {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetHTTP2(true)
	}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// do sends method host path to the listener and returns status, body.
func (h *harness) do(c *http.Client, listener, method, host, path string) (*http.Response, string) {
	h.t.Helper()
	addr := h.srv.Addr(listener).String()
	req, _ := http.NewRequest(method, "https://"+addr+path, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

const routingConfig = `
storage: %s
listeners:
  - name: public
    address: "127.0.0.1:0"
    protocols: [h1, h2]
    tls: { names: [localhost] }
routes:
  - name: catch-all
    direct_response: { status: 200, body: "catch-all" }
  - name: api-prefix
    match: { hosts: [api.example.com], path_prefix: /v1/ }
    direct_response: { status: 200, body: "api-v1" }
  - name: api-exact
    match: { hosts: [api.example.com], path: /v1/health }
    direct_response: { status: 200, body: "api-health" }
  - name: api-longer-prefix
    match: { hosts: [api.example.com], path_prefix: /v1/admin }
    direct_response: { status: 403, body: "admin-blocked" }
  - name: api-post
    match: { hosts: [api.example.com], path_prefix: /v1/, methods: [POST] }
    direct_response: { status: 201, body: "api-post" }
  - name: wildcard
    match: { hosts: ["*.example.com"], path_regex: "/items/[0-9]+" }
    direct_response: { status: 200, body: "wildcard-items" }
  - name: wildcard-any
    match: { hosts: ["*.example.com"] }
    direct_response: { status: 200, body: "wildcard" }
`

func TestRoutingOverTLS(t *testing.T) {
	h := newHarness(t, nil)
	h.apply(fmt.Sprintf(routingConfig, t.TempDir()))
	cases := []struct {
		name, method, host, path string
		status                   int
		body                     string
	}{
		{"exact path beats prefix", "GET", "api.example.com", "/v1/health", 200, "api-health"},
		{"longest prefix wins", "GET", "api.example.com", "/v1/admin/users", 403, "admin-blocked"},
		{"prefix", "GET", "api.example.com", "/v1/things", 200, "api-v1"},
		{"method match first", "POST", "api.example.com", "/v1/things", 201, "api-post"},
		{"host case and port ignored", "GET", "API.Example.COM:443", "/v1/things", 200, "api-v1"},
		{"exact host falls to wildcard when no path matches", "GET", "api.example.com", "/other", 200, "wildcard"},
		{"wildcard with regex", "GET", "www.example.com", "/items/42", 200, "wildcard-items"},
		{"regex is anchored", "GET", "www.example.com", "/items/42/x", 200, "wildcard"},
		{"multi-label wildcard", "GET", "a.b.example.com", "/", 200, "wildcard"},
		{"any host", "GET", "localhost", "/anything", 200, "catch-all"},
		{"wildcard does not match the apex", "GET", "example.com", "/", 200, "catch-all"},
	}
	for _, proto := range []string{"h1", "h2"} {
		c := h.client(proto)
		for _, tc := range cases {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				resp, body := h.do(c, "public", tc.method, tc.host, tc.path)
				if resp.StatusCode != tc.status || body != tc.body {
					t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, tc.status, tc.body)
				}
				wantProto := map[string]int{"h1": 1, "h2": 2}[proto]
				if resp.ProtoMajor != wantProto {
					t.Fatalf("protocol %s, want HTTP/%d", resp.Proto, wantProto)
				}
				if id := resp.Header.Get(HeaderRequestID); len(id) != 36 {
					t.Fatalf("X-Request-Id %q is not a UUID", id)
				}
			})
		}
	}
}

func TestNoRouteIsJSON404(t *testing.T) {
	h := newHarness(t, nil)
	h.apply(fmt.Sprintf(`
storage: %s
listeners:
  - { name: public, address: "127.0.0.1:0", tls: { names: [localhost] } }
routes:
  - { name: only, match: { path: /only }, direct_response: { status: 200 } }
`, t.TempDir()))
	resp, body := h.do(h.client("h1"), "public", "GET", "localhost", "/nope")
	var out struct {
		Status    int    `json:"status"`
		Error     string `json:"error"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if resp.StatusCode != 404 || out.Status != 404 || out.RequestID != resp.Header.Get(HeaderRequestID) {
		t.Fatalf("got %d %+v", resp.StatusCode, out)
	}
	if !strings.Contains(h.logs.String(), `"reason":"no_route"`) {
		t.Fatalf("access log lacks the reason: %s", h.logs.String())
	}
}

func TestHTTP3(t *testing.T) {
	port := freeUDPAndTCPPort(t)
	h := newHarness(t, nil)
	h.apply(fmt.Sprintf(`
storage: %s
listeners:
  - { name: public, address: "127.0.0.1:%d", protocols: [h1, h2, h3], tls: { names: [localhost] } }
routes:
  - { name: hello, direct_response: { status: 200, body: "hello over h3" } }
`, t.TempDir(), port))
	// h1/h2 responses advertise h3.
	resp, _ := h.do(h.client("h2"), "public", "GET", "localhost", "/")
	if got, want := resp.Header.Get("Alt-Svc"), fmt.Sprintf(`h3=":%d"; ma=86400`, port); got != want {
		t.Fatalf("Alt-Svc %q, want %q", got, want)
	}
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: h.certs.pool, ServerName: "localhost"}}
	defer tr.Close()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 3 || string(b) != "hello over h3" {
		t.Fatalf("got %s %q", resp.Proto, b)
	}
}

// freeUDPAndTCPPort finds a port free for both TCP and UDP on 127.0.0.1.
func freeUDPAndTCPPort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func TestRedirectListener(t *testing.T) {
	h := newHarness(t, nil)
	h.apply(fmt.Sprintf(`
storage: %s
listeners:
  - { name: public, address: "127.0.0.1:0", tls: { names: [localhost] } }
  - { name: http, address: "127.0.0.1:0", redirect_https: { port: 8443 } }
routes:
  - { name: hello, direct_response: { status: 200 } }
`, t.TempDir()))
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	cases := []struct{ host, path, want string }{
		{"example.com", "/a?b=c", "https://example.com:8443/a?b=c"},
		{"example.com:8080", "/", "https://example.com:8443/"},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest("GET", "http://"+h.srv.Addr("http").String()+tc.path, nil)
		req.Host = tc.host
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != tc.want {
			t.Fatalf("%s%s: %d %q, want 308 %q", tc.host, tc.path, resp.StatusCode, resp.Header.Get("Location"), tc.want)
		}
	}
	// A Host that would inject into the Location header is refused.
	conn, err := net.Dial("tcp", h.srv.Addr("http").String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: evil.com/x\r\n\r\n")
	buf := make([]byte, 64)
	n, _ := conn.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 400") {
		t.Fatalf("bad host got %q", buf[:n])
	}
}

func TestTLSVersionsAndALPN(t *testing.T) {
	h := newHarness(t, nil)
	h.apply(fmt.Sprintf(`
storage: %s
listeners:
  - { name: public, address: "127.0.0.1:0", protocols: [h1], tls: { names: [localhost] } }
routes:
  - { name: hello, direct_response: { status: 200 } }
`, t.TempDir()))
	addr := h.srv.Addr("public").String()
	// TLS 1.1 is refused at the handshake.
	_, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: h.certs.pool, ServerName: "localhost",
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		t.Fatal("TLS 1.1 handshake succeeded")
	}
	// h2 is not offered on an h1-only listener.
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: h.certs.pool, ServerName: "localhost", NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Fatalf("negotiated %q on an h1-only listener", p)
	}
}

func TestMaxConnections(t *testing.T) {
	h := newHarness(t, nil)
	h.apply(fmt.Sprintf(`
storage: %s
listeners:
  - name: public
    address: "127.0.0.1:0"
    tls: { names: [localhost] }
    limits: { max_connections: 2 }
routes:
  - { name: hello, direct_response: { status: 200 } }
`, t.TempDir()))
	addr := h.srv.Addr("public").String()
	cfg := &tls.Config{RootCAs: h.certs.pool, ServerName: "localhost"}
	var held []*tls.Conn
	for i := 0; i < 2; i++ {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		held = append(held, c)
	}
	if _, err := tls.Dial("tcp", addr, cfg); err == nil {
		t.Fatal("third connection accepted with max_connections 2")
	}
	held[0].Close()
	// The slot is released asynchronously when the server sees the
	// close; retry a bounded number of times.
	var err error
	for i := 0; i < 100; i++ {
		var c *tls.Conn
		if c, err = tls.Dial("tcp", addr, cfg); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("no connection accepted after one closed: %v", err)
	}
	held[1].Close()
}

func TestClientFromXFF(t *testing.T) {
	trustedNets := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}
	peer := netip.MustParseAddr("127.0.0.1")
	cases := []struct {
		name string
		xff  []string
		want string
	}{
		{"no header", nil, "127.0.0.1"},
		{"one client", []string{"203.0.113.7"}, "203.0.113.7"},
		{"skips trusted hops", []string{"203.0.113.7, 10.1.1.1, 10.2.2.2"}, "203.0.113.7"},
		{"spoofed left part ignored", []string{"1.2.3.4, 203.0.113.7, 10.1.1.1"}, "203.0.113.7"},
		{"several headers", []string{"198.51.100.1", "203.0.113.7, 10.0.0.1"}, "203.0.113.7"},
		{"garbage stops the walk", []string{"203.0.113.7, garbage, 10.0.0.1"}, "10.0.0.1"},
		{"ipv6 and mapped", []string{"::ffff:203.0.113.9"}, "203.0.113.9"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := clientFromXFF(tc.xff, trustedNets, peer); got.String() != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}

func TestNormalizePath(t *testing.T) {
	cases := []struct {
		raw, want string
		bad       bool
	}{
		{"/api/admin", "/api/admin", false},
		{"/api//admin", "/api/admin", false},
		{"/x/../api/admin", "/api/admin", false},
		{"/api/./admin/", "/api/admin/", false},
		{"/../../etc/passwd", "/etc/passwd", false},
		{"/api%2Fadmin", "", true},
		{"/api%5cadmin", "", true},
		{"/a%20b", "/a b", false},
	}
	for _, tc := range cases {
		t.Run(tc.raw, func(t *testing.T) {
			r, err := http.NewRequest("GET", "https://x"+tc.raw, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = normalizePath(r)
			if tc.bad != (err != nil) {
				t.Fatalf("error %v, want bad=%v", err, tc.bad)
			}
			if !tc.bad && r.URL.Path != tc.want {
				t.Fatalf("path %q, want %q", r.URL.Path, tc.want)
			}
		})
	}
}
