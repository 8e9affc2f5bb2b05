package svid

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/ztgate/ztgate/configs"
)

// BenchmarkUpstream measures the per-request cost of a SPIFFE mTLS
// upstream against a plain TLS upstream (server-authenticated, CA file),
// both over loopback with the same ECDSA P-256 keys:
//   - reuse: pooled keep-alive connections (the steady state);
//   - new_conn: a full handshake per request (keep-alives off).
//
// Run: go test -run '^$' -bench Upstream -benchmem ./authn/svid/
func BenchmarkUpstream(b *testing.B) {
	ca := newCA(b, "example.org")
	agent := startAgent(b, ca, time.Hour)
	f := newSource(b, identityCfg(func(i *configs.Identity) { i.WorkloadAPI = agent.Addr() }))
	waitUntil(b, f.src, "first SVID", func() bool { return f.src.Ready() == nil })

	// The same empty handler on both, so the difference is the transport.
	noop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	mtlsUp := newUpstreamWith(b, ca, detailsID, ca, noop)
	mtlsCfg := upstreamTLS(b, f.src, configs.UpstreamTLS{SPIFFEID: detailsID})

	// The plain upstream: server certificate only, verified by CA file.
	plainUp := httptest.NewUnstartedServer(noop)
	cert, err := tlsconfig.GetCertificate(issue(b, ca, detailsID, time.Hour))(&tls.ClientHelloInfo{})
	if err != nil {
		b.Fatal(err)
	}
	plainUp.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	plainUp.Config.ErrorLog = log.New(io.Discard, "", 0)
	plainUp.EnableHTTP2 = true
	plainUp.StartTLS()
	defer plainUp.Close()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	plainCfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}

	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		url  string
	}{
		{"plain_tls", plainCfg, plainUp.URL},
		{"spiffe_mtls", mtlsCfg, mtlsUp.URL},
	} {
		for _, mode := range []string{"reuse_h2", "reuse_h1", "new_conn"} {
			b.Run(tc.name+"/"+mode, func(b *testing.B) {
				tr := &http.Transport{TLSClientConfig: tc.cfg.Clone(), MaxIdleConnsPerHost: 8}
				switch mode {
				case "reuse_h2":
					tr.ForceAttemptHTTP2 = true
				case "new_conn":
					tr.DisableKeepAlives = true
				}
				defer tr.CloseIdleConnections()
				c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					resp, err := c.Get(tc.url)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
	}
}
