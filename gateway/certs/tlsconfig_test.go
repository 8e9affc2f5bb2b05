package certs

import (
	"crypto/tls"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ztgate/ztgate/e2e/testenv"
)

func TestSNISelection(t *testing.T) {
	dir, storage := t.TempDir(), t.TempDir()
	ca := newTestCA(t)
	aCert, aKey, a := ca.leaf(t, dir, "a", "a.ztgate.test")
	wCert, wKey, w := ca.leaf(t, dir, "w", "*.w.ztgate.test")
	ipCert, ipKey, ip := ca.leaf(t, dir, "ip", "127.0.0.1")
	yaml := filesConfig(storage, [2]string{aCert, aKey}, [2]string{wCert, wKey}, [2]string{ipCert, ipKey}) + `
  - name: local
    address: "127.0.0.1:9443"
    tls: { names: [x.ztgate.test, y.ztgate.test] }
`
	m := newManager(t, parseConfig(t, yaml), Deps{})
	filesAddr, localAddr := serveTLS(t, m, "files"), serveTLS(t, m, "local")
	localRoots := poolFromFile(t, m.LocalCARoot())
	for _, tc := range []struct {
		name, addr, sni string
		wantSerial      string
		wantDNS         string
	}{
		{name: "exact", addr: filesAddr, sni: "a.ztgate.test", wantSerial: a.SerialNumber.String()},
		{name: "wildcard", addr: filesAddr, sni: "api.w.ztgate.test", wantSerial: w.SerialNumber.String()},
		{name: "no SNI picks the local address", addr: filesAddr, sni: "127.0.0.1", wantSerial: ip.SerialNumber.String()},
		{name: "local CA first name", addr: localAddr, sni: "x.ztgate.test", wantDNS: "x.ztgate.test"},
		{name: "local CA second name", addr: localAddr, sni: "y.ztgate.test", wantDNS: "y.ztgate.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			roots := ca.pool
			if tc.addr == localAddr {
				roots = localRoots
			}
			leaf, err := handshake(tc.addr, tc.sni, roots)
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if tc.wantSerial != "" && leaf.SerialNumber.String() != tc.wantSerial {
				t.Errorf("served %v, want serial %s", leaf.DNSNames, tc.wantSerial)
			}
			if tc.wantDNS != "" && (len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != tc.wantDNS) {
				t.Errorf("served %v, want [%s]", leaf.DNSNames, tc.wantDNS)
			}
		})
	}
	t.Run("a listener never serves another listener's certificate", func(t *testing.T) {
		if _, err := handshake(localAddr, "a.ztgate.test", ca.pool); err == nil {
			t.Fatal("local listener served the files listener's certificate")
		}
		if _, err := handshake(filesAddr, "x.ztgate.test", localRoots); err == nil {
			t.Fatal("files listener served the local listener's certificate")
		}
	})
}

func TestTLSVersions(t *testing.T) {
	openssl := testenv.Tool(t, "openssl")
	storage := t.TempDir()
	yaml := localCAConfig(storage, "localhost") + `
  - name: strict
    address: "127.0.0.1:9443"
    tls: { names: [localhost], min_version: "1.3" }
`
	m := newManager(t, parseConfig(t, yaml), Deps{})
	addrs := map[string]string{"public": serveTLS(t, m, "public"), "strict": serveTLS(t, m, "strict")}
	for _, tc := range []struct {
		listener, flag string
		ok             bool
	}{
		{"public", "-tls1_1", false},
		{"public", "-tls1_2", true},
		{"public", "-tls1_3", true},
		{"strict", "-tls1_2", false},
		{"strict", "-tls1_3", true},
	} {
		t.Run(tc.listener+tc.flag, func(t *testing.T) {
			// SECLEVEL=0 lets openssl offer TLS 1.1 at all, so a refusal
			// is the server's.
			cmd := exec.Command(openssl, "s_client", "-connect", addrs[tc.listener], "-servername", "localhost",
				tc.flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile", m.LocalCARoot(), "-verify_return_error", "-brief")
			cmd.Stdin = strings.NewReader("")
			out, err := cmd.CombinedOutput()
			if tc.ok && err != nil {
				t.Fatalf("%s refused: %v\n%s", tc.flag, err, out)
			}
			if !tc.ok && err == nil {
				t.Fatalf("%s accepted:\n%s", tc.flag, out)
			}
			if tc.ok && !strings.Contains(string(out), "Verification: OK") {
				t.Errorf("no verified handshake:\n%s", out)
			}
		})
	}
	t.Run("control: this openssl can speak TLS 1.1", func(t *testing.T) {
		// Proves the -tls1_1 refusal above is the gateway's, not the
		// client's: the same command succeeds against a server allowing 1.1.
		base, _ := m.TLSConfig("public")
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS10, GetCertificate: base.GetCertificate})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_ = c.(*tls.Conn).Handshake()
				c.Close()
			}
		}()
		cmd := exec.Command(openssl, "s_client", "-connect", ln.Addr().String(), "-servername", "localhost",
			"-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", "-brief")
		cmd.Stdin = strings.NewReader("")
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "TLSv1.1") {
			t.Fatalf("openssl -tls1_1 against a TLS 1.1 server: %v\n%s", err, out)
		}
	})
	t.Run("tls1.2 suites are ECDHE AEAD only", func(t *testing.T) {
		for _, cs := range tls.CipherSuites() {
			_, err := handshake(addrs["public"], "localhost", poolFromFile(t, m.LocalCARoot()), func(c *tls.Config) {
				c.MaxVersion = tls.VersionTLS12
				c.CipherSuites = []uint16{cs.ID}
			})
			allowed := false
			for _, id := range cipherSuites {
				allowed = allowed || id == cs.ID
			}
			if err == nil && !allowed {
				t.Errorf("suite %s accepted", cs.Name)
			}
		}
		for _, cs := range tls.InsecureCipherSuites() {
			_, err := handshake(addrs["public"], "localhost", poolFromFile(t, m.LocalCARoot()), func(c *tls.Config) {
				c.MaxVersion = tls.VersionTLS12
				c.CipherSuites = []uint16{cs.ID}
			})
			if err == nil {
				t.Errorf("insecure suite %s accepted", cs.Name)
			}
		}
	})
}

func TestWrapCertOncePerCertificate(t *testing.T) {
	storage := t.TempDir()
	var calls atomic.Int32
	m := newManager(t, parseConfig(t, localCAConfig(storage, "localhost", "b.ztgate.test")), Deps{
		WrapCert: func(c *tls.Certificate) (*tls.Certificate, error) {
			calls.Add(1)
			cp := *c
			return &cp, nil
		},
	})
	addr := serveTLS(t, m, "public")
	roots := poolFromFile(t, m.LocalCARoot())
	for range 5 {
		for _, n := range []string{"localhost", "b.ztgate.test"} {
			if _, err := handshake(addr, n, roots); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := calls.Load(); got != 2 {
		t.Fatalf("WrapCert called %d times for 2 certificates and 10 handshakes, want 2", got)
	}
}
