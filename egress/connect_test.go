package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/e2e/testenv"
)

// connectFixture is one proxy with a TLS origin, a plain origin and a DNS
// server, shared by the CONNECT tests.
type connectFixture struct {
	*env
	pki       *pki
	port      int // TLS origin
	plainPort int
	proxy     string // host:port of the connect listener
	fwd       string // host:port of the http listener
}

func newConnectFixture(t *testing.T, extra string) *connectFixture {
	t.Helper()
	pk := newPKI(t, "allowed.test", "other.test", "local.test", "meta.test", "wild.example.test", "xn--bcher-kva.test")
	port := startOrigin(t, pk)
	plainPort := startPlainOrigin(t)
	dnsAddr := startDNS(t, map[string][]string{
		"allowed.test":       {"127.0.0.1"},
		"other.test":         {"127.0.0.1"},
		"denied.test":        {"127.0.0.1"},
		"local.test":         {"127.0.0.1"},
		"meta.test":          {"169.254.169.254"},
		"mixed.test":         {"169.254.169.254", "10.0.0.1"},
		"plain.test":         {"127.0.0.1"},
		"wild.example.test":  {"127.0.0.1"},
		"xn--bcher-kva.test": {"127.0.0.1"},
		"dns.google":         {"127.0.0.1"},
	})
	yaml := fmt.Sprintf(`
egress:
  listeners:
    - {name: connect, mode: connect, address: "127.0.0.1:0"}
    - {name: forward, mode: http, address: "127.0.0.1:0"}
  groups:
    - {name: loopback-clients, cidrs: [127.0.0.0/8]}
  resolver: {address: %q, timeout: 5s}
  rules:
    - name: no-other
      action: DENY
      sni: [blocked.allowed.test]
    - name: origin
      from: [loopback-clients]
      sni: [allowed.test, "*.example.test", "bücher.test"]
      ports: [%d]
      cidrs: [127.0.0.0/8]
    - name: guarded
      sni: [local.test, meta.test, mixed.test]
      ports: [%d]
    - name: everything-tls
      sni: ["*"]
      ports: [%d]
      from: [loopback-clients]
      cidrs: [127.0.0.1/32]
    - name: plain
      sni: [plain.test]
      ports: [%d]
      tls: false
      cidrs: [127.0.0.0/8]
%s`, dnsAddr, port, port, port+0, plainPort, extra)
	// everything-tls would allow other.test and denied.test: keep it on a
	// port no test uses, so only its DoH behaviour is visible.
	yaml = strings.Replace(yaml, fmt.Sprintf("ports: [%d]\n      from: [loopback-clients]\n      cidrs: [127.0.0.1/32]", port), "ports: [1]\n      from: [loopback-clients]\n      cidrs: [127.0.0.1/32]", 1)
	e := startProxy(t, yaml, Deps{})
	return &connectFixture{env: e, pki: pk, port: port, plainPort: plainPort,
		proxy: e.p.Addr("connect").String(), fwd: e.p.Addr("forward").String()}
}

func (f *connectFixture) curl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	curl := testenv.Tool(t, "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, curl, append([]string{"-sS", "--max-time", "15"}, args...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestConnectCurl(t *testing.T) {
	f := newConnectFixture(t, "")
	port := strconv.Itoa(f.port)
	cases := []struct {
		name   string
		url    string
		ok     bool
		reason string
		rule   string
	}{
		{"allowlisted", "https://allowed.test:" + port + "/", true, "allowed", "origin"},
		{"wildcard", "https://wild.example.test:" + port + "/", true, "allowed", "origin"},
		{"IDNA U-label rule, A-label request", "https://xn--bcher-kva.test:" + port + "/", true, "allowed", "origin"},
		{"trailing dot and upper case", "https://ALLOWED.test.:" + port + "/", true, "allowed", "origin"},
		{"not allowlisted", "https://denied.test:" + port + "/", false, "not_allowlisted", ""},
		{"deny rule wins", "https://blocked.allowed.test:" + port + "/", false, "deny_rule", "no-other"},
		{"wrong port", "https://allowed.test:2/", false, "not_allowlisted", ""},
		{"allowlisted name resolving to loopback", "https://local.test:" + port + "/", false, "private_address", "guarded"},
		{"allowlisted name resolving to metadata", "https://meta.test:" + port + "/", false, "metadata_address", "guarded"},
		{"metadata reported over private", "https://mixed.test:" + port + "/", false, "metadata_address", "guarded"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			host := strings.SplitN(strings.TrimPrefix(tc.url, "https://"), ":", 2)[0]
			out, err := f.curl(t, "-x", "http://"+f.proxy, "--cacert", f.pki.caFile, tc.url)
			want := map[string]string{FieldReason: tc.reason, FieldHost: strings.TrimSuffix(strings.ToLower(host), ".")}
			if tc.rule != "" {
				want[FieldRule] = tc.rule
			}
			if tc.ok {
				if err != nil || !strings.HasPrefix(out, "hello from ") {
					t.Fatalf("curl: %v: %s", err, out)
				}
				want[FieldDecision] = "allow"
				r := f.rec.wait(t, MsgClose, want)
				if r.attrs[FieldBytesDown] == "0" || r.attrs[FieldDialled] == "" {
					t.Fatalf("close record without bytes or dialled address: %v", r.attrs)
				}
				return
			}
			if err == nil {
				t.Fatalf("curl succeeded through a denied CONNECT: %s", out)
			}
			if !strings.Contains(out, "403") && !strings.Contains(out, "CONNECT") {
				t.Fatalf("curl error does not show the refused CONNECT: %s", out)
			}
			want[FieldDecision] = "deny"
			r := f.rec.wait(t, MsgDecision, want)
			if tc.reason == "metadata_address" && r.attrs[FieldDialled] != "" {
				t.Fatalf("metadata address was dialled: %v", r.attrs)
			}
		})
	}
}

func TestDecisionMetrics(t *testing.T) {
	f := newConnectFixture(t, "")
	for _, host := range []string{"meta.test", "denied.test", "denied.test"} {
		c, _ := dialConnect(t, f.proxy, fmt.Sprintf("%s:%d", host, f.port))
		c.Close()
	}
	f.rec.wait(t, MsgClose, map[string]string{FieldHost: "meta.test"})
	f.rec.waitN(t, 2, MsgClose, map[string]string{FieldHost: "denied.test"})
	for _, tc := range []struct {
		reason string
		want   float64
	}{{"metadata_address", 1}, {"not_allowlisted", 2}} {
		got := counterValue(t, f, "ztgate_egress_decisions_total", map[string]string{"listener": "connect", "decision": "deny", "reason": tc.reason})
		if got != tc.want {
			t.Errorf("ztgate_egress_decisions_total{reason=%q} = %v, want %v", tc.reason, got, tc.want)
		}
	}
}

// counterValue reads one counter from the registry the proxy was given.
func counterValue(t *testing.T, f *connectFixture, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestConnectSNIMismatchOpenSSL(t *testing.T) {
	openssl := testenv.Tool(t, "openssl")
	f := newConnectFixture(t, "")
	cases := []struct {
		name, servername, reason string
		args                     []string
	}{
		{"domain fronting", "other.test", "sni_mismatch", nil},
		{"no SNI", "", "no_sni", []string{"-noservername"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"s_client", "-proxy", f.proxy, "-connect", "allowed.test:" + strconv.Itoa(f.port), "-CAfile", f.pki.caFile}
			if tc.servername != "" {
				args = append(args, "-servername", tc.servername)
			}
			args = append(args, tc.args...)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, openssl, args...)
			cmd.Env = cleanEnv()
			cmd.Stdin = strings.NewReader("")
			out, _ := cmd.CombinedOutput()
			if strings.Contains(string(out), "Server certificate") {
				t.Fatalf("handshake completed through the proxy:\n%s", out)
			}
			want := map[string]string{FieldDecision: "deny", FieldReason: tc.reason, FieldHost: "allowed.test"}
			if tc.servername != "" {
				want[FieldSNI] = tc.servername
			}
			r := f.rec.wait(t, MsgDecision, want)
			if r.attrs[FieldDialled] != "" {
				t.Fatalf("a mismatching tunnel was dialled: %v", r.attrs)
			}
			f.rec.wait(t, MsgClose, map[string]string{FieldConnID: r.attrs[FieldConnID]})
		})
	}
	t.Run("matching SNI", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, openssl, "s_client", "-proxy", f.proxy, "-connect", "allowed.test:"+strconv.Itoa(f.port),
			"-servername", "allowed.test", "-CAfile", f.pki.caFile, "-verify_return_error")
		cmd.Env = cleanEnv()
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Server certificate") || !strings.Contains(string(out), "Verify return code: 0") {
			t.Fatalf("openssl through the proxy: %v\n%s", err, out)
		}
	})
}

func TestHTTPForwardCurl(t *testing.T) {
	f := newConnectFixture(t, "")
	// The Host header names another site: the origin must see the
	// request target's host, which the policy decided on.
	out, err := f.curl(t, "-x", "http://"+f.fwd, "-H", "Proxy-Authorization: Basic c2VjcmV0", "-H", "Host: evil.test", fmt.Sprintf("http://plain.test:%d/x", f.plainPort))
	if err != nil || !strings.HasPrefix(out, "plain hello, host=plain.test") {
		t.Fatalf("curl: %v: %s", err, out)
	}
	if !strings.Contains(out, `proxy-auth=""`) {
		t.Fatalf("Proxy-Authorization leaked to the origin: %s", out)
	}
	f.rec.wait(t, MsgClose, map[string]string{FieldDecision: "allow", FieldRule: "plain", FieldListener: "forward"})

	out, err = f.curl(t, "-x", "http://"+f.fwd, fmt.Sprintf("http://denied.test:%d/", f.plainPort))
	if err != nil || !strings.Contains(out, "Forbidden") {
		t.Fatalf("denied forward: %v: %s", err, out)
	}
	f.rec.wait(t, MsgDecision, map[string]string{FieldDecision: "deny", FieldReason: "not_allowlisted", FieldHost: "denied.test"})

	// A CONNECT on the http listener, and a TLS name on a tls: false rule.
	f.curl(t, "-x", "http://"+f.fwd, "--cacert", f.pki.caFile, fmt.Sprintf("https://allowed.test:%d/", f.port)) // refused: the record says how
	f.rec.wait(t, MsgDecision, map[string]string{FieldReason: "unsupported_request", FieldListener: "forward"})
}

// dialConnect opens a CONNECT tunnel and returns the conn after the 200.
func dialConnect(t *testing.T, proxy, target string) (net.Conn, int) {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		t.Fatalf("CONNECT response: %v", err)
	}
	if resp.StatusCode == http.StatusOK && br.Buffered() != 0 {
		t.Fatalf("proxy sent bytes after the CONNECT response")
	}
	return c, resp.StatusCode
}

func TestConnectGoClient(t *testing.T) {
	f := newConnectFixture(t, "")
	target := fmt.Sprintf("allowed.test:%d", f.port)
	t.Run("ECH extension", func(t *testing.T) {
		c, status := dialConnect(t, f.proxy, target)
		defer c.Close()
		if status != 200 {
			t.Fatalf("status %d", status)
		}
		c.Write(helloRecord("allowed.test", true))
		io.Copy(io.Discard, c) // the proxy closes
		f.rec.wait(t, MsgDecision, map[string]string{FieldReason: "ech", FieldSNI: "allowed.test"})
	})
	t.Run("IP literal SNI", func(t *testing.T) {
		c, _ := dialConnect(t, f.proxy, target)
		defer c.Close()
		c.Write(helloRecord("127.0.0.1", false))
		io.Copy(io.Discard, c)
		f.rec.wait(t, MsgDecision, map[string]string{FieldReason: "ip_sni"})
	})
	t.Run("not TLS", func(t *testing.T) {
		c, _ := dialConnect(t, f.proxy, target)
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
		io.Copy(io.Discard, c)
		f.rec.wait(t, MsgDecision, map[string]string{FieldReason: "bad_client_hello", FieldHost: "allowed.test"})
	})
	t.Run("DoH resolver behind a wildcard", func(t *testing.T) {
		// everything-tls allows "*" on port 1; dns.google stays denied.
		c, status := dialConnect(t, f.proxy, "dns.google:1")
		c.Close()
		if status != http.StatusForbidden {
			t.Fatalf("status %d", status)
		}
		f.rec.wait(t, MsgDecision, map[string]string{FieldReason: "public_resolver", FieldHost: "dns.google", FieldRule: "everything-tls"})
	})
	t.Run("garbage request", func(t *testing.T) {
		c, err := net.Dial("tcp", f.proxy)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "\x16\x03\x01\x00\x05hello\r\n\r\n")
		b, _ := io.ReadAll(c)
		if !strings.HasPrefix(string(b), "HTTP/1.1 400") {
			t.Fatalf("reply %q", b)
		}
	})
	t.Run("Go TLS client, bytes counted", func(t *testing.T) {
		c, status := dialConnect(t, f.proxy, target)
		if status != 200 {
			t.Fatalf("status %d", status)
		}
		tc := tls.Client(c, &tls.Config{ServerName: "allowed.test", RootCAs: f.pki.caPool})
		fmt.Fprintf(tc, "GET /big HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		tc.Close()
		if n != 8<<20 {
			t.Fatalf("read %d bytes", n)
		}
		r := f.rec.wait(t, MsgClose, map[string]string{FieldDecision: "allow", FieldSNI: "allowed.test", FieldPort: strconv.Itoa(f.port)})
		down, _ := strconv.Atoi(r.attrs[FieldBytesDown])
		if down < 8<<20 {
			t.Fatalf("bytes_down %d < body", down)
		}
	})
}

func TestConnectSourceLimit(t *testing.T) {
	f := newConnectFixture(t, "  limits: {max_connections_per_source: 1}\n")
	c1, status := dialConnect(t, f.proxy, fmt.Sprintf("allowed.test:%d", f.port))
	defer c1.Close()
	if status != 200 {
		t.Fatalf("first: %d", status)
	}
	c2, err := net.Dial("tcp", f.proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	io.Copy(io.Discard, c2) // closed at once
	f.rec.wait(t, MsgDecision, map[string]string{FieldReason: "source_connection_limit"})
	// Another source address is not affected.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	c3, err := d.Dial("tcp", f.proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	fmt.Fprintf(c3, "CONNECT denied.test:443 HTTP/1.1\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c3), &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("second source: %v %v", resp, err)
	}
}

// helloRecord builds a minimal ClientHello record naming sni, with an
// encrypted_client_hello extension when ech is set.
func helloRecord(sni string, ech bool) []byte {
	ext := func(typ uint16, data []byte) []byte {
		return append([]byte{byte(typ >> 8), byte(typ), byte(len(data) >> 8), byte(len(data))}, data...)
	}
	name := []byte(sni)
	list := append([]byte{0, byte(len(name) >> 8), byte(len(name))}, name...)
	exts := ext(0, append([]byte{byte(len(list) >> 8), byte(len(list))}, list...))
	if ech {
		exts = append(exts, ext(0xfe0d, []byte{0, 1, 2, 3})...)
	}
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)
	body = append(body, 0, 0, 2, 0x13, 0x01, 1, 0)
	body = append(body, byte(len(exts)>>8), byte(len(exts)))
	body = append(body, exts...)
	msg := append([]byte{1, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{22, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}
