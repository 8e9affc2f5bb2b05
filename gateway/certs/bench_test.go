package certs

import (
	"crypto/tls"
	"net"
	"testing"
)

// BenchmarkGetCertificate measures the per-handshake certificate pick
// (snapshot load, cache lookup, listener filter, wrapped-cert cache).
func BenchmarkGetCertificate(b *testing.B) {
	storage := b.TempDir()
	cfg, err := parseConfigB(localCAConfig(storage, "localhost", "a.ztgate.test", "b.ztgate.test", "127.0.0.1"))
	if err != nil {
		b.Fatal(err)
	}
	m, err := New(cfg, Deps{WrapCert: func(c *tls.Certificate) (*tls.Certificate, error) { return c, nil }})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Stop()
	hello := &tls.ClientHelloInfo{ServerName: "b.ztgate.test", SupportedVersions: []uint16{tls.VersionTLS13}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := m.getCertificate("public", hello); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandshakeTLS13 measures full TLS 1.3 handshakes (ECDSA P-256
// leaf from the local CA) over loopback, client and server in-process.
func BenchmarkHandshakeTLS13(b *testing.B) {
	cfg, err := parseConfigB(localCAConfig(b.TempDir(), "localhost"))
	if err != nil {
		b.Fatal(err)
	}
	m, err := New(cfg, Deps{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Stop()
	sc, _ := m.TLSConfig("public")
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
				tc := tls.Server(c, sc)
				_ = tc.Handshake()
				tc.Close()
			}()
		}
	}()
	roots := poolFromFileB(b, m.LocalCARoot())
	cc := &tls.Config{ServerName: "localhost", RootCAs: roots, ClientSessionCache: nil}
	b.ResetTimer()
	for b.Loop() {
		c, err := tls.Dial("tcp", ln.Addr().String(), cc)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
