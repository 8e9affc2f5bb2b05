package upstream

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ztgate/ztgate/e2e/testenv"
)

// TestNghttpdUpstream proxies to nghttpd, an HTTP/2-only server that is
// not Go's, over TLS (ALPN h2) and over h2c with prior knowledge.
func TestNghttpdUpstream(t *testing.T) {
	bin := testenv.Tool(t, "nghttpd")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("from nghttpd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cert := selfSigned(t)
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)

	start := func(args ...string) string {
		port := strconv.Itoa(freePort(t))
		argv := append([]string{"-a", "127.0.0.1", "-d", dir}, args...)
		argv = append(argv, port)
		if len(args) == 0 {
			argv = append(argv, keyFile, certFile)
		}
		cmd := exec.Command(bin, argv...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		a := net.JoinHostPort("127.0.0.1", port)
		waitUntil(t, func() bool {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		return a
	}
	tlsAddr := start()
	h2cAddr := start("--no-tls")
	for _, tc := range []struct{ name, endpoint, body string }{
		{"h2 over TLS", tlsAddr, "    http2: true\n    tls: {ca_file: " + certFile + "}\n"},
		{"h2c prior knowledge", h2cAddr, "    http2: true\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := front(t, newPool(t, parseUpstream(t, "ng", []string{tc.endpoint}, tc.body), Deps{}), nil, nil)
			code, body := get(t, f.Client(), "GET", f.URL+"/index.html", nil)
			if code != 200 || body != "from nghttpd\n" {
				t.Fatalf("%d %q", code, body)
			}
		})
	}
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
