package certs

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/e2e/testenv"
)

// pebble is Debian's pebble ACME test server, run on loopback for the
// test, resolving names through a tiny DNS server that answers 127.0.0.1,
// and validating challenges against the test's own listeners.
type pebble struct {
	dir     string // directory URL
	caRoot  string // PEM file of the CA that signed pebble's HTTPS cert
	mgmt    string // management base URL
	mgmtTLS *x509.CertPool
}

// startDNS answers every A query with 127.0.0.1 (and AAAA with nothing).
func startDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			for _, q := range r.Question {
				if q.Qtype == dns.TypeA {
					m.Answer = append(m.Answer, &dns.A{
						Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
						A:   net.IPv4(127, 0, 0, 1),
					})
				}
			}
			_ = w.WriteMsg(m)
		})}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPebble runs pebble with httpPort/tlsPort pointing at the test's
// challenge listeners.
func startPebble(t *testing.T, httpPort, tlsPort int) *pebble {
	t.Helper()
	bin := testenv.Tool(t, "pebble")
	dir := t.TempDir()
	ca := newTestCA(t)
	certPath, keyPath, _ := ca.leaf(t, dir, "pebble", "127.0.0.1", "localhost")
	caPath := filepath.Join(dir, "pebble-ca.pem")
	writeFile(t, caPath, ca.pem)
	listen, mgmt := freePort(t), freePort(t)
	conf, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", listen),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", mgmt),
		"certificate":                    certPath,
		"privateKey":                     keyPath,
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
	}})
	confPath := filepath.Join(dir, "pebble.json")
	writeFile(t, confPath, conf)

	cmd := exec.Command(bin, "-config", confPath, "-dnsserver", startDNS(t))
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		pw.Close()
	})
	// pebble logs "ACME directory available at" just before it serves; the log is
	// the start signal, kept for failure output.
	running := make(chan struct{})
	var logBuf strings.Builder
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(pr)
		once := false
		for sc.Scan() {
			logBuf.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "ACME directory available at") {
				once = true
				close(running)
			}
		}
	}()
	t.Cleanup(func() {
		if t.Failed() {
			pw.Close()
			<-logDone
			t.Logf("pebble log:\n%s", logBuf.String())
		}
	})
	select {
	case <-running:
	case <-time.After(20 * time.Second):
		t.Fatal("pebble did not start")
	}
	p := &pebble{
		dir:     fmt.Sprintf("https://127.0.0.1:%d/dir", listen),
		caRoot:  caPath,
		mgmt:    fmt.Sprintf("https://127.0.0.1:%d", mgmt),
		mgmtTLS: ca.pool,
	}
	// The sockets open right after the log line; wait for them to accept
	// (bounded) so certmagic's first request does not race them.
	for _, port := range []int{listen, mgmt} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pebble port %d: %v", port, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return p
}

// root fetches pebble's issuing root from its management endpoint.
func (p *pebble) root(t *testing.T) *x509.CertPool {
	t.Helper()
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.mgmtTLS}}}
	resp, err := cl.Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("pebble /roots/0: no certificate: %s", data)
	}
	return pool
}

func TestACMEWithPebble(t *testing.T) {
	testenv.Tool(t, "pebble")
	// The gateway's challenge listeners: plain HTTP (HTTP-01) and TLS
	// (TLS-ALPN-01), on loopback ports pebble is told to use.
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpPort, tlsPort := httpLn.Addr().(*net.TCPAddr).Port, tlsLn.Addr().(*net.TCPAddr).Port
	p := startPebble(t, httpPort, tlsPort)

	// One manager per subtest; the listeners route to the current one.
	var current atomic.Pointer[Manager]
	// What pebble's validation reached: our handlers, not certmagic's
	// own challenge servers.
	var sawHTTP01, sawALPN atomic.Int32
	// refuseHTTP01 makes the HTTP listener answer 404 to challenges.
	var refuseHTTP01 atomic.Bool
	ready := make(chan struct{})
	httpSrv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			sawHTTP01.Add(1)
			if refuseHTTP01.Load() {
				http.NotFound(w, r)
				return
			}
		}
		current.Load().HTTPChallengeHandler(http.RedirectHandler("https://example/", http.StatusPermanentRedirect)).ServeHTTP(w, r)
	})}
	go func() { _ = httpSrv.Serve(httpLn) }()
	t.Cleanup(func() { _ = httpSrv.Close() })
	var tlsCfg = func() *tls.Config {
		return &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			if len(h.SupportedProtos) == 1 && h.SupportedProtos[0] == "acme-tls/1" {
				sawALPN.Add(1)
			}
			tc, err := current.Load().TLSConfig("public")
			if err != nil {
				return nil, err
			}
			tc.NextProtos = []string{"h2", "http/1.1"}
			if c, err := tc.GetConfigForClient(h); c != nil || err != nil {
				return c, err
			}
			return tc, nil
		}}
	}()
	tlsSrv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })}
	go func() { <-ready; _ = tlsSrv.Serve(tls.NewListener(tlsLn, tlsCfg)) }()
	t.Cleanup(func() { _ = tlsSrv.Close() })
	close(ready)

	t.Run("failure is counted and explained", func(t *testing.T) {
		refuseHTTP01.Store(true)
		defer refuseHTTP01.Store(false)
		const name = "fails.example.com"
		yaml := fmt.Sprintf(`
storage: %s
listeners:
  - name: public
    address: "127.0.0.1:8443"
    tls:
      names: [%s]
      acme: { directory: %s, ca_root: %s, challenges: [http-01], http_port: %d, tls_alpn_port: %d }
`, t.TempDir(), name, p.dir, p.caRoot, httpPort, tlsPort)
		reg := prometheus.NewRegistry()
		m := newManager(t, parseConfig(t, yaml), Deps{Metrics: reg})
		current.Store(m)
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		failures := func() float64 {
			v, _ := metricValue(t, reg, "ztgate_tls_certificate_obtain_failures_total", map[string]string{"source": "acme"})
			return v
		}
		for failures() == 0 {
			select {
			case <-m.Changed():
			case <-ctx.Done():
				t.Fatal("no obtain failure was counted")
			}
		}
		err := m.Ready()
		if err == nil || !strings.Contains(err.Error(), `listener "public": "fails.example.com" (acme): `) || !strings.Contains(err.Error(), "404") {
			t.Fatalf("Ready() = %v, want the name and pebble's reason (404)", err)
		}
	})

	t.Run("a name moves between the local CA and ACME on reload", func(t *testing.T) {
		const name = "moves.example.com"
		storage := t.TempDir()
		local := parseConfig(t, localCAConfig(storage, name))
		acme := parseConfig(t, fmt.Sprintf(`
storage: %s
listeners:
  - name: public
    address: "127.0.0.1:8443"
    tls:
      names: [%s]
      acme: { directory: %s, ca_root: %s, challenges: [tls-alpn-01], http_port: %d, tls_alpn_port: %d }
`, storage, name, p.dir, p.caRoot, httpPort, tlsPort))
		m := newManager(t, local, Deps{})
		current.Store(m)
		localRoots := poolFromFile(t, m.LocalCARoot())
		if _, err := handshake(tlsLn.Addr().String(), name, localRoots); err != nil {
			t.Fatalf("local CA certificate: %v", err)
		}
		if err := m.Apply(acme); err != nil {
			t.Fatal(err)
		}
		waitReady(t, m)
		if _, err := handshake(tlsLn.Addr().String(), name, p.root(t)); err != nil {
			t.Fatalf("after moving to ACME: %v", err)
		}
		if err := m.Apply(local); err != nil {
			t.Fatal(err)
		}
		if _, err := handshake(tlsLn.Addr().String(), name, localRoots); err != nil {
			t.Fatalf("after moving back to the local CA: %v", err)
		}
	})

	for _, tc := range []struct{ challenge, name string }{
		{"http-01", "http01.example.com"},
		{"tls-alpn-01", "alpn01.example.com"},
	} {
		t.Run(tc.challenge, func(t *testing.T) {
			storage := t.TempDir()
			yaml := fmt.Sprintf(`
storage: %s
listeners:
  - name: public
    address: "127.0.0.1:8443"
    tls:
      names: [%s]
      acme:
        email: ops@example.com
        directory: %s
        ca_root: %s
        challenges: [%s]
        http_port: %d
        tls_alpn_port: %d
`, storage, tc.name, p.dir, p.caRoot, tc.challenge, httpPort, tlsPort)
			m := newManager(t, parseConfig(t, yaml), Deps{})
			current.Store(m)
			waitReady(t, m)
			roots := p.root(t)
			leaf, err := handshake(tlsLn.Addr().String(), tc.name, roots)
			if err != nil {
				t.Fatalf("handshake verifying against pebble's root: %v", err)
			}
			switch {
			case tc.challenge == "http-01" && sawHTTP01.Load() == 0:
				t.Error("pebble never fetched the HTTP-01 token from the gateway's HTTP listener")
			case tc.challenge == "tls-alpn-01" && sawALPN.Load() == 0:
				t.Error("pebble never made an acme-tls/1 handshake with the gateway's TLS listener")
			}
			if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != tc.name {
				t.Errorf("served %v, want %s", leaf.DNSNames, tc.name)
			}
		})
	}
}

// waitReady waits, on the manager's change signal, until it is ready.
func waitReady(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	for m.Ready() != nil {
		select {
		case <-m.Changed():
		case <-ctx.Done():
			t.Fatalf("no certificate: %v", m.Ready())
		}
	}
}
