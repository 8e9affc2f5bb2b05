package accel

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/e2e/testenv"
)

// serveTLS starts an HTTPS server on loopback whose certificate key is
// served by e, and returns its address and a CA file for clients.
func serveTLS(t *testing.T, e *Engine, cert *tls.Certificate, tickets *Tickets) (addr, caFile string) {
	t.Helper()
	w, err := e.Wrap(cert)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{*w}, MinVersion: tls.VersionTLS12}
	if tickets != nil {
		tickets.Register(cfg)
		tickets.Register(cfg) // a second Register of one config is a no-op
	} else {
		cfg.SessionTicketsDisabled = true
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { io.WriteString(rw, "ok") }),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go srv.Serve(tls.NewListener(ln, cfg))
	t.Cleanup(func() { srv.Close() })
	addr = ln.Addr().String()
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	return addr, caFile
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestRealHandshakes runs openssl s_client and curl against a server
// whose key is served by each provider: TLS 1.2 and 1.3, RSA (PSS and,
// in TLS 1.2, PKCS#1 v1.5) and ECDSA.
func TestRealHandshakes(t *testing.T) {
	sclient := testenv.Tool(t, "openssl")
	curl := testenv.Tool(t, "curl")
	type client struct {
		name   string
		keys   string // "rsa" or "" for any
		args   func(addr, ca string) []string
		expect []string
		bin    string
	}
	clients := []client{
		{name: "s_client_tls13", bin: sclient, args: func(a, ca string) []string {
			return []string{"s_client", "-connect", a, "-tls1_3", "-CAfile", ca, "-verify_return_error", "-brief"}
		}, expect: []string{"TLSv1.3", "Verification: OK"}},
		{name: "s_client_tls12", bin: sclient, args: func(a, ca string) []string {
			return []string{"s_client", "-connect", a, "-tls1_2", "-CAfile", ca, "-verify_return_error", "-brief"}
		}, expect: []string{"TLSv1.2", "Verification: OK"}},
		{name: "s_client_tls12_pkcs1", keys: "rsa", bin: sclient, args: func(a, ca string) []string {
			return []string{"s_client", "-connect", a, "-tls1_2", "-sigalgs", "RSA+SHA256", "-CAfile", ca, "-verify_return_error", "-brief"}
		}, expect: []string{"TLSv1.2", "Signature type: RSA\n", "Verification: OK"}},
		{name: "s_client_tls13_pss", keys: "rsa", bin: sclient, args: func(a, ca string) []string {
			return []string{"s_client", "-connect", a, "-tls1_3", "-sigalgs", "rsa_pss_rsae_sha384", "-CAfile", ca, "-verify_return_error", "-brief"}
		}, expect: []string{"TLSv1.3", "RSA-PSS", "Verification: OK"}},
		{name: "curl_tls13", bin: curl, args: func(a, ca string) []string {
			return []string{"-sS", "--max-time", "10", "--cacert", ca, "--tlsv1.3", "https://" + a + "/"}
		}, expect: []string{"ok"}},
		{name: "curl_tls12", bin: curl, args: func(a, ca string) []string {
			return []string{"-sS", "--max-time", "10", "--cacert", ca, "--tlsv1.2", "--tls-max", "1.2", "https://" + a + "/"}
		}, expect: []string{"ok"}},
	}
	for pname, cfg := range providers(t) {
		for _, kname := range []string{"rsa2048", "ecdsa_p256", "ecdsa_p384"} {
			e := newEngine(t, cfg, prometheus.NewRegistry())
			addr, ca := serveTLS(t, e, selfSigned(t, testKeys()[kname]), nil)
			for _, c := range clients {
				if c.keys != "" && !strings.HasPrefix(kname, c.keys) {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s/%s", pname, kname, c.name), func(t *testing.T) {
					okC := e.m.ops.WithLabelValues(pname, kname, ResultOK)
					before := value(okC)
					out := run(t, c.bin, c.args(addr, ca)...)
					for _, w := range c.expect {
						if !strings.Contains(out, w) {
							t.Fatalf("output lacks %q:\n%s", w, out)
						}
					}
					if got := value(okC) - before; got != 1 {
						t.Fatalf("%s signed %v times in this handshake, want 1", pname, got)
					}
				})
			}
		}
	}
}

// TestNamedOpenSSLProvider loads a provider by name (legacy ships with
// OpenSSL 3 on Debian) and still signs: the path QAT's qatprovider takes.
func TestNamedOpenSSLProvider(t *testing.T) {
	if _, ok := providers(t)["openssl"]; !ok {
		testenv.Missing(t, "libcrypto.so.3 cannot be loaded (apt-get install libssl3)")
	}
	e := newEngine(t, configs.Accel{Provider: "openssl", Required: true,
		OpenSSL: configs.AccelOpenSSL{Provider: "legacy", Properties: "?provider=default"}}, prometheus.NewRegistry())
	addr, ca := serveTLS(t, e, selfSigned(t, testKeys()["rsa2048"]), nil)
	out := run(t, testenv.Tool(t, "curl"), "-sS", "--max-time", "10", "--cacert", ca, "https://"+addr+"/")
	if out != "ok" {
		t.Fatalf("got %q", out)
	}
}
