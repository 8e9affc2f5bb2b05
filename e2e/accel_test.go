package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/e2e/testenv"
)

// writeRSACert writes a self-signed RSA-2048 certificate for localhost.
func writeRSACert(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "rsa.pem"), filepath.Join(dir, "rsa.key")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600)
	return cert, key
}

// TestOpenSSLOffloadAndResumption: with accel.provider openssl, the
// listener's RSA key signs through libcrypto (counted per provider), and
// session tickets resume across a reload.
func TestOpenSSLOffloadAndResumption(t *testing.T) {
	curl := testenv.Tool(t, "curl")
	openssl := testenv.Tool(t, "openssl")
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"); err != nil {
		testenv.Missing(t, "libcrypto.so.3 is not installed (libssl3)")
	}
	certDir := t.TempDir()
	cert, key := writeRSACert(t, certDir)
	up, _, _ := echoUpstream(t)
	conf := func(body string) func(g *gw) string {
		return func(g *gw) string {
			return fmt.Sprintf(`
storage: %s/state
admin: { address: "127.0.0.1:%d" }
accel: { provider: openssl, required: true }
listeners:
  - { name: public, address: "127.0.0.1:%d", tls: { files: [{ cert: %s, key: %s }] } }
upstreams: [{ name: echo, endpoints: ["%s"] }]
routes: [{ name: r, direct_response: { status: 200, body: "%s" } }]
`, g.dir, g.admin, g.port, cert, key, up, body)
		}
	}
	g := startGW(t, conf("one"))
	out, err := exec.Command(curl, "-sS", "--cacert", cert, g.url("/")).CombinedOutput()
	if err != nil || string(out) != "one" {
		t.Fatalf("curl: %v %s", err, out)
	}
	if n := g.metric(`ztgate_accel_operations_total{key_type="rsa2048",provider="openssl",result="ok"}`); n < 1 {
		t.Fatalf("no RSA signature counted for the openssl provider (got %v)", n)
	}
	// A full handshake saves a session; the next one resumes it, also
	// after a reload (the ticket keys outlive config snapshots).
	sess := filepath.Join(t.TempDir(), "sess.pem")
	sclient := func(extra ...string) string {
		args := append([]string{"s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", g.port), "-servername", "localhost", "-tls1_3"}, extra...)
		cmd := exec.Command(openssl, args...)
		cmd.Stdin = strings.NewReader("")
		b, _ := cmd.CombinedOutput()
		return string(b)
	}
	if o := sclient("-sess_out", sess); !strings.Contains(o, "New, TLSv1.3") {
		t.Fatalf("first handshake:\n%s", o)
	}
	if o := sclient("-sess_in", sess); !strings.Contains(o, "Reused, TLSv1.3") {
		t.Fatalf("second handshake did not resume:\n%s", o)
	}
	g.write(conf("two")(g))
	g.reload("success")
	if o := sclient("-sess_in", sess); !strings.Contains(o, "Reused, TLSv1.3") {
		t.Fatalf("no resumption after a reload:\n%s", o)
	}
	if n := g.metric(`ztgate_tls_session_resumption_total{resumed="true"}`); n < 2 {
		t.Fatalf("resumed handshakes counted: %v, want >= 2", n)
	}
}
