package dot_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/dnsguard"
	"github.com/ztgate/ztgate/dnsguard/dot"
)

// startDoT runs a miekg/dns DNS-over-TLS server on loopback with a fresh
// certificate for dns.test and returns its address and root pool.
func startDoT(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dns.test"},
		DNSNames: []string{"dns.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{Listener: ln, Net: "tcp-tls", NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A 192.0.2.53")
			m.Answer = []dns.RR{rr}
			w.WriteMsg(m)
		})}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String(), pool
}

func TestDoTUpstream(t *testing.T) {
	addr, pool := startDoT(t)
	for _, c := range []struct {
		name, serverName string
		wantOK           bool
	}{
		{"verified", "dns.test", true},
		{"wrong-name", "other.test", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := configs.Parse("t.yaml", []byte(`dns:
  listen: ["127.0.0.1:0"]
  attempts: 1
  upstreams: [{address: "`+addr+`", protocol: tls, server_name: `+c.serverName+`}]
`), nil)
			if err != nil {
				t.Fatal(err)
			}
			s, err := dnsguard.New(cfg, dnsguard.Deps{DialTLS: (&dot.Dialer{RootCAs: pool, Timeout: 5 * time.Second}).Dial})
			if err != nil {
				t.Fatal(err)
			}
			addrs, err := s.Resolve(context.Background(), netip.MustParseAddr("10.0.0.1"), "www.example.test")
			if c.wantOK {
				if err != nil || len(addrs) != 2 || addrs[0] != netip.MustParseAddr("192.0.2.53") {
					t.Fatalf("Resolve over DoT = %v, %v", addrs, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("a certificate for dns.test was accepted for server_name %s", c.serverName)
			}
		})
	}
}

func TestDialRefusesOldTLS(t *testing.T) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MaxVersion: tls.VersionTLS11,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	_, err = (&dot.Dialer{Timeout: 5 * time.Second}).Dial(context.Background(), ln.Addr().String(), "dns.test")
	if err == nil {
		t.Fatal("handshake below TLS 1.2 succeeded")
	}
}
