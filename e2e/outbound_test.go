package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ztgate/ztgate/e2e/testenv"
)

// authoritative runs a miekg/dns server on loopback: the "internet" for
// these tests. Names map to one A record each; others are NXDOMAIN.
func authoritative(t *testing.T, records map[string]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		q := r.Question[0]
		ip, ok := records[strings.TrimSuffix(strings.ToLower(q.Name), ".")]
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(ip)})
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// tlsOrigin is an HTTPS server for the given name with its own CA.
func tlsOrigin(t *testing.T, name string) (addr, caFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	caFile = filepath.Join(t.TempDir(), "origin-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "origin %s", name)
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, ReadHeaderTimeout: 5 * time.Second}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), caFile
}

// TestEgressThroughDNSGuard: the real binary runs dnsguard and the egress
// CONNECT proxy; egress resolves through the guard and requires that the
// guard handed out the address it dials.
func TestEgressThroughDNSGuard(t *testing.T) {
	curl := testenv.Tool(t, "curl")
	dig := testenv.Tool(t, "dig")
	origin, ca := tlsOrigin(t, "allowed.test")
	_, originPort, _ := net.SplitHostPort(origin)
	upstream := authoritative(t, map[string]string{
		"allowed.test":   "127.0.0.1",
		"metadata.test":  "169.254.169.254",
		"forbidden.test": "127.0.0.1",
	})
	dnsPort, egressPort := freePort(t), freePort(t)
	g := startGW(t, func(g *gw) string {
		return fmt.Sprintf(`
storage: %s/state
admin: { address: "127.0.0.1:%d" }
listeners: [{ name: public, address: "127.0.0.1:%d", tls: { names: [localhost] } }]
routes: [{ name: r, direct_response: { status: 200 } }]
dns:
  listen: ["127.0.0.1:%d"]
  upstreams: [{ address: "%s" }]
egress:
  listeners: [{ name: out, mode: connect, address: "127.0.0.1:%d" }]
  require_dns_guard: true
  rules:
    - { name: web, sni: [allowed.test, metadata.test], ports: [%s], cidrs: [127.0.0.1/32] }
`, g.dir, g.admin, g.port, dnsPort, upstream, egressPort, originPort)
	})
	// A workload resolves through the guard.
	out, err := exec.Command(dig, "+short", "+time=2", "+tries=1", "-p", fmt.Sprint(dnsPort), "@127.0.0.1", "allowed.test", "A").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "127.0.0.1" {
		t.Fatalf("dig through dnsguard: %v %q", err, out)
	}
	proxy := fmt.Sprintf("http://127.0.0.1:%d", egressPort)
	get := func(name string) (string, error) {
		out, err := exec.Command(curl, "-sS", "--max-time", "10", "-x", proxy, "--cacert", ca,
			fmt.Sprintf("https://%s:%s/", name, originPort)).CombinedOutput()
		return string(out), err
	}
	if body, err := get("allowed.test"); err != nil || body != "origin allowed.test" {
		t.Fatalf("allowed name through CONNECT: %v %q", err, body)
	}
	if body, err := get("forbidden.test"); err == nil {
		t.Fatalf("a name outside the allowlist went through: %q", body)
	}
	if body, err := get("metadata.test"); err == nil {
		t.Fatalf("an allowlisted name resolving to the metadata address went through: %q", body)
	}
	for _, want := range []string{`"reason":"not_allowlisted"`, `"reason":"metadata_address"`} {
		if !g.waitLog(regexp.QuoteMeta(want)) {
			t.Fatalf("egress decision log lacks %s", want)
		}
	}
}
