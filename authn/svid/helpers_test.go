package svid

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ztgate/ztgate/authn/svid/workloadapitest"
	"github.com/ztgate/ztgate/configs"
)

const (
	gatewayID = "spiffe://example.org/ns/edge/sa/ztgate"
	detailsID = "spiffe://example.org/ns/default/sa/details"
)

// waitLimit only guards against a hung test; every wait is on a signal.
const waitLimit = 20 * time.Second

// shortDir is a temp dir with a path short enough for a unix socket
// (t.TempDir() under long test names can exceed 108 bytes).
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "svid")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func newCA(t testing.TB, td string) *workloadapitest.CA {
	t.Helper()
	ca, err := workloadapitest.NewCA(td)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t testing.TB, ca *workloadapitest.CA, id string, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	sv, err := ca.Issue(id, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return sv
}

// startAgent runs a test Workload API server issuing gatewayID SVIDs.
func startAgent(t testing.TB, ca *workloadapitest.CA, ttl time.Duration) *workloadapitest.Server {
	t.Helper()
	srv, err := workloadapitest.NewServer(filepath.Join(shortDir(t), "agent.sock"), ca, gatewayID, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// logSink captures the source's JSON logs.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// lines returns the log lines containing every one of subs.
func (l *logSink) lines(subs ...string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

type fixture struct {
	src  *Source
	logs *logSink
	reg  *prometheus.Registry
}

func identityCfg(mod func(*configs.Identity)) *configs.Config {
	cfg := &configs.Config{Identity: configs.Identity{
		WatchInterval: 10 * time.Millisecond,
		Backoff:       configs.IdentityBackoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	}}
	mod(&cfg.Identity)
	return cfg
}

func newSource(t testing.TB, cfg *configs.Config) *fixture {
	t.Helper()
	f := &fixture{logs: &logSink{}, reg: prometheus.NewRegistry()}
	log := slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	src, err := New(cfg, Deps{Logger: log, Metrics: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	f.src = src
	return f
}

// waitUntil waits on the source's state-change signal until cond holds.
func waitUntil(t testing.TB, s *Source, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		ch := s.events()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; status: %+v", what, s.Status())
		}
	}
}

func currentSerial(s *Source) string {
	sv, err := s.GetX509SVID()
	if err != nil {
		return ""
	}
	return serialHex(sv.Certificates[0])
}

// upstream is an mTLS test server that, like a mesh sidecar, requires a
// client SVID from the trust domain and authorizes the gateway's ID. It
// echoes the client's SPIFFE ID and certificate serial.
func newUpstream(t testing.TB, ca *workloadapitest.CA, serverID string, clientCA *workloadapitest.CA) *httptest.Server {
	t.Helper()
	return newUpstreamWith(t, ca, serverID, clientCA, echoPeer)
}

func newUpstreamWith(t testing.TB, ca *workloadapitest.CA, serverID string, clientCA *workloadapitest.CA, h http.Handler) *httptest.Server {
	t.Helper()
	serverSVID := issue(t, ca, serverID, time.Hour)
	allowed := spiffeid.RequireFromString(gatewayID)
	ts := httptest.NewUnstartedServer(h)
	ts.TLS = tlsconfig.MTLSServerConfig(serverSVID, clientCA.Bundle(), tlsconfig.AuthorizeID(allowed))
	// httptest adds its own certificate when Certificates is empty, and
	// crypto/tls prefers it to GetCertificate for clients without SNI.
	cert, err := tlsconfig.GetCertificate(serverSVID)(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	ts.TLS.Certificates, ts.TLS.GetCertificate = []tls.Certificate{*cert}, nil
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of several tests
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

// echoPeer answers with the client certificate's SPIFFE ID and serial.
var echoPeer = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if len(r.TLS.PeerCertificates) > 0 {
		leaf := r.TLS.PeerCertificates[0]
		id, _ := x509svid.IDFromCert(leaf)
		w.Header().Set("X-Peer-Id", id.String())
		w.Header().Set("X-Peer-Serial", fmt.Sprintf("%x", leaf.SerialNumber))
	}
	w.WriteHeader(http.StatusOK)
})

// client is an http.Client dialing SPIFFE upstreams with cfg, pooling
// connections as the gateway's upstream pool does.
func client(cfg *tls.Config) (*http.Client, *http.Transport) {
	tr := &http.Transport{
		TLSClientConfig:     cfg,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, tr
}

func upstreamTLS(t testing.TB, s *Source, u configs.UpstreamTLS) *tls.Config {
	t.Helper()
	cfg, err := s.UpstreamTLS(&u)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// get does one request and returns the serial the upstream saw.
func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Peer-Serial"), nil
}

func leafSerial(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }

func newStoppedAgent(dir string, ca *workloadapitest.CA) (*workloadapitest.Server, error) {
	return workloadapitest.NewServer(filepath.Join(dir, "agent.sock"), ca, gatewayID, 30*time.Second)
}

// spiffeBundleJSON is ca's bundle as a SPIFFE bundle document (JWKS).
func spiffeBundleJSON(ca *workloadapitest.CA) ([]byte, error) {
	return spiffebundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.Cert}).Marshal()
}

// value reads a counter or gauge (one series).
func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var d dto.Metric
	if err := (<-ch).Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// gathered returns the series of a metric family as "labels=value" text,
// e.g. `serial=ab,spiffe_id=spiffe://x 1`.
func gathered(t testing.TB, reg *prometheus.Registry, name string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out = append(out, fmt.Sprintf("%s %g", strings.Join(labels, ","), v))
		}
	}
	return out
}
