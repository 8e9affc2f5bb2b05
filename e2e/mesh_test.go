package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/authn/svid/workloadapitest"
)

// meshUpstream is an HTTPS server holding an SVID for id, requiring a
// client certificate from the trust domain, answering with the client's
// SPIFFE ID.
func meshUpstream(t *testing.T, ca *workloadapitest.CA, id string) string {
	t.Helper()
	sv, err := ca.Issue(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var chain [][]byte
	for _, c := range sv.Certificates {
		chain = append(chain, c.Raw)
	}
	pool := x509.NewCertPool()
	for _, c := range ca.Bundle().X509Authorities() {
		pool.AddCert(c)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			uri := r.TLS.PeerCertificates[0].URIs[0].String()
			fmt.Fprintf(w, "upstream %s saw client %s over %s", id, uri, r.Proto)
		}),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: sv.PrivateKey}},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"h2", "http/1.1"},
		},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestMeshUpstream: a request flows through ingress to an mTLS upstream
// with the gateway's SVID from a Workload API (the test server speaks
// SPIRE's protocol); an upstream presenting an unexpected SPIFFE ID gets
// 502 and a log line naming both IDs.
func TestMeshUpstream(t *testing.T) {
	ca, err := workloadapitest.NewCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	const gatewayID = "spiffe://example.org/ns/edge/sa/ztgate"
	agent, err := workloadapitest.NewServer(sock, ca, gatewayID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer agent.Stop()
	details := meshUpstream(t, ca, "spiffe://example.org/ns/default/sa/details")
	g := startGW(t, func(g *gw) string {
		return fmt.Sprintf(`
storage: %s/state
admin: { address: "127.0.0.1:%d" }
identity: { workload_api: "%s" }
listeners:
  - { name: public, address: "127.0.0.1:%d", tls: { names: [localhost] } }
upstreams:
  - name: details
    endpoints: ["%s"]
    http2: true
    tls: { spiffe_id: spiffe://example.org/ns/default/sa/details }
  - name: impostor
    endpoints: ["%s"]
    tls: { spiffe_id: spiffe://example.org/ns/default/sa/ratings }
routes:
  - { name: details, match: { path_prefix: /details }, upstream: details }
  - { name: ratings, match: { path_prefix: /ratings }, upstream: impostor }
`, g.dir, g.admin, agent.Addr(), g.port, details, details)
	})
	c := g.client()
	resp, err := c.Get(g.url("/details/1"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "saw client "+gatewayID+" over HTTP/2.0") {
		t.Fatalf("mesh upstream: %d %q", resp.StatusCode, b)
	}
	resp, err = c.Get(g.url("/ratings/1"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("upstream with the wrong SPIFFE ID: %d, want 502", resp.StatusCode)
	}
	for _, want := range []string{"spiffe://example.org/ns/default/sa/details", "spiffe://example.org/ns/default/sa/ratings"} {
		if !g.waitLog(regexp.QuoteMeta(want)) {
			t.Fatalf("the log does not name %s", want)
		}
	}
	// The admin /identity endpoint shows the current SVID.
	resp, err = http.Get(g.adminURL("/identity"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), gatewayID) {
		t.Fatalf("/identity: %d %s", resp.StatusCode, b)
	}
}
