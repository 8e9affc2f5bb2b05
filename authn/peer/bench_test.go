package peer

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// BenchmarkPeer measures the per-connection SPIFFE verification and the
// per-request identity and XFCC.
//
//	go test -run '^$' -bench Peer -benchmem ./authn/peer/
func BenchmarkPeer(b *testing.B) {
	p := newPKI(b)
	set, err := LoadBundles(p.bundle.TrustBundles)
	if err != nil {
		b.Fatal(err)
	}
	s, _ := ServerTLS(Strict, set)
	cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{p.sleep.Leaf}}
	b.Run("VerifyConnection", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := s.VerifyConnection(cs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("FromConnectionState+XFCC", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			pr, err := FromConnectionState(&cs)
			if err != nil {
				b.Fatal(err)
			}
			_ = pr.XFCC(gatewayID)
		}
	})
}
