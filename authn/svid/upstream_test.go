package svid

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ztgate/ztgate/configs"
)

// TestUpstreamMTLS: the gateway presents its Workload API SVID to an
// upstream that requires it, and verifies the upstream's ID per config.
func TestUpstreamMTLS(t *testing.T) {
	ca := newCA(t, "example.org")
	agent := startAgent(t, ca, 30*time.Second)
	f := newSource(t, identityCfg(func(i *configs.Identity) { i.WorkloadAPI = agent.Addr() }))
	waitUntil(t, f.src, "first SVID", func() bool { return f.src.Ready() == nil })
	up := newUpstream(t, ca, detailsID, ca)

	tests := []struct {
		name    string
		tls     configs.UpstreamTLS
		wantErr error // nil: the request succeeds
	}{
		{"exact id", configs.UpstreamTLS{SPIFFEID: detailsID}, nil},
		{"id list", configs.UpstreamTLS{SPIFFEIDs: []string{"spiffe://example.org/ns/default/sa/reviews", detailsID}}, nil},
		{"trust domain", configs.UpstreamTLS{TrustDomain: "example.org"}, nil},
		{"wrong id", configs.UpstreamTLS{SPIFFEID: "spiffe://example.org/ns/default/sa/ratings"}, ErrPeerRejected},
		{"not in list", configs.UpstreamTLS{SPIFFEIDs: []string{"spiffe://example.org/ns/default/sa/reviews"}}, ErrPeerRejected},
		{"other trust domain", configs.UpstreamTLS{TrustDomain: "partner.org"}, ErrPeerRejected},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, tr := client(upstreamTLS(t, f.src, tc.tls))
			defer tr.CloseIdleConnections()
			resp, err := c.Get(up.URL)
			if tc.wantErr != nil {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("request succeeded; want %v", tc.wantErr)
				}
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v; want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("X-Peer-Id"); got != gatewayID {
				t.Errorf("upstream saw %q; want %q", got, gatewayID)
			}
			if got, want := resp.Header.Get("X-Peer-Serial"), leafSerial(agent.Current().Certificates[0]); got != want {
				t.Errorf("upstream saw serial %s; want the agent's %s", got, want)
			}
			if resp.ProtoMajor != 2 {
				t.Errorf("protocol %s; want HTTP/2 via ALPN", resp.Proto)
			}
		})
	}

	t.Run("mismatch names both IDs", func(t *testing.T) {
		want := "spiffe://example.org/ns/default/sa/ratings"
		c, tr := client(upstreamTLS(t, f.src, configs.UpstreamTLS{SPIFFEID: want}))
		defer tr.CloseIdleConnections()
		_, err := c.Get(up.URL)
		var idErr *PeerIDError
		if !errors.As(err, &idErr) {
			t.Fatalf("error %v; want *PeerIDError", err)
		}
		if idErr.Presented.String() != detailsID || idErr.Expected != want {
			t.Errorf("PeerIDError %+v", idErr)
		}
		if lines := f.logs.lines(`"`+LogFieldPresented+`":"`+detailsID+`"`, `"`+LogFieldExpected+`":"`+want+`"`); len(lines) == 0 {
			t.Errorf("no log line naming presented %s and expected %s:\n%s", detailsID, want, f.logs)
		}
		// "wrong id", "not in list", "other trust domain" and this one.
		if n := value(f.src.m.handshakeFailures.WithLabelValues(ReasonIDMismatch)); n != 4 {
			t.Errorf("%s = %v; want 4", ReasonIDMismatch, n)
		}
	})
}

// TestUntrustedAndFederated: an upstream from another trust domain is
// rejected until the agent sends that domain's bundle as a federated
// bundle, then accepted by trust_domain.
func TestUntrustedAndFederated(t *testing.T) {
	ca := newCA(t, "example.org")
	partner := newCA(t, "partner.org")
	agent := startAgent(t, ca, 30*time.Second)
	f := newSource(t, identityCfg(func(i *configs.Identity) { i.WorkloadAPI = agent.Addr() }))
	waitUntil(t, f.src, "first SVID", func() bool { return f.src.Ready() == nil })
	up := newUpstream(t, partner, "spiffe://partner.org/payments", ca)
	cfg := upstreamTLS(t, f.src, configs.UpstreamTLS{TrustDomain: "partner.org"})

	c, tr := client(cfg)
	_, err := c.Get(up.URL)
	var untrusted *UntrustedPeerError
	if !errors.As(err, &untrusted) || !errors.Is(err, ErrPeerRejected) {
		t.Fatalf("error %v; want *UntrustedPeerError", err)
	}
	tr.CloseIdleConnections()

	agent.SetFederated(partner.Bundle())
	waitUntil(t, f.src, "federated bundle", func() bool {
		_, err := f.src.GetX509BundleForTrustDomain(partner.TrustDomain)
		return err == nil
	})
	c, tr = client(cfg)
	defer tr.CloseIdleConnections()
	if _, err := get(c, up.URL); err != nil {
		t.Fatalf("with the federated bundle: %v", err)
	}
	st := f.src.Status()
	if len(st.Bundles) != 2 || st.Bundles[1].TrustDomain != "partner.org" || st.Bundles[1].Source != "workload_api" {
		t.Errorf("bundles %+v; want example.org and partner.org from workload_api", st.Bundles)
	}
}

// TestRotationUnderLoad: the agent rotates the SVID in the middle of a
// bounded concurrent load; no request fails, and new connections present
// the new certificate.
func TestRotationUnderLoad(t *testing.T) {
	ca := newCA(t, "example.org")
	agent := startAgent(t, ca, 30*time.Second)
	f := newSource(t, identityCfg(func(i *configs.Identity) { i.WorkloadAPI = agent.Addr() }))
	waitUntil(t, f.src, "first SVID", func() bool { return f.src.Ready() == nil })
	oldSerial := currentSerial(f.src)
	up := newUpstream(t, ca, detailsID, ca)
	cfg := upstreamTLS(t, f.src, configs.UpstreamTLS{SPIFFEID: detailsID})
	c, tr := client(cfg)
	defer tr.CloseIdleConnections()
	changed := f.src.Changed()

	const workers, perWorker = 8, 60
	var (
		done, failed atomic.Int64
		wg           sync.WaitGroup
		rotateOnce   sync.Once
		rotated      = make(chan string, 1)
		firstErr     atomic.Value
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				// Dial fresh now and then, so handshakes happen
				// before, during and after the rotation.
				if i%10 == 0 {
					tr.CloseIdleConnections()
				}
				if _, err := get(c, up.URL); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				if done.Add(1) == workers*perWorker/3 {
					// A third of the way in: rotate, and in the next
					// requests drop idle pooled connections, as the
					// upstream pool does on Source.Changed.
					rotateOnce.Do(func() {
						sv, err := agent.Rotate()
						if err != nil {
							t.Error(err)
							return
						}
						rotated <- leafSerial(sv.Certificates[0])
					})
				}
			}
		}()
	}
	newSerial := <-rotated
	select {
	case <-changed:
	case <-time.After(waitLimit):
		t.Fatal("no Changed signal after rotation")
	}
	waitUntil(t, f.src, "rotated SVID", func() bool { return currentSerial(f.src) == newSerial })
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed during rotation; first: %v", n, done.Load(), firstErr.Load())
	}
	if newSerial == oldSerial {
		t.Fatal("rotation kept the serial")
	}
	// Pooled connections are retired (the pool does this on Changed or
	// max_connection_age); the next connection carries the new SVID.
	tr.CloseIdleConnections()
	if got, err := get(c, up.URL); err != nil || got != newSerial {
		t.Fatalf("after rotation the upstream saw serial %q (err %v); want new %s (old %s)", got, err, newSerial, oldSerial)
	}
	c2, tr2 := client(cfg)
	defer tr2.CloseIdleConnections()
	if got, err := get(c2, up.URL); err != nil || got != newSerial {
		t.Fatalf("a new connection presented %q (err %v); want %s", got, err, newSerial)
	}
	if n := value(f.src.m.rotations); n != 1 {
		t.Errorf("rotations metric %v; want 1", n)
	}
	if st := f.src.Status(); st.Rotations != 1 || st.SVID.Serial != newSerial {
		t.Errorf("status %+v", st)
	}
}

// TestAgentStopRestart: with the agent gone the current SVID keeps
// working until it expires (with a warning near the end), then SPIFFE
// upstreams fail closed with ErrNoSVID; the agent returns and the
// gateway recovers by itself.
func TestAgentStopRestart(t *testing.T) {
	ca := newCA(t, "example.org")
	agent := startAgent(t, ca, 5*time.Second)
	f := newSource(t, identityCfg(func(i *configs.Identity) { i.WorkloadAPI = agent.Addr() }))
	waitUntil(t, f.src, "first SVID", func() bool { return f.src.Ready() == nil })
	up := newUpstream(t, ca, detailsID, ca)
	cfg := upstreamTLS(t, f.src, configs.UpstreamTLS{SPIFFEID: detailsID})

	agent.Stop()
	waitUntil(t, f.src, "the source to notice the agent is gone", func() bool { return f.src.Status().LastError != "" })
	c, tr := client(cfg)
	if _, err := get(c, up.URL); err != nil && f.src.Ready() == nil {
		t.Fatalf("with the agent stopped and the SVID still valid: %v", err)
	}
	tr.CloseIdleConnections()

	waitUntil(t, f.src, "SVID expiry", func() bool { return f.src.Ready() != nil })
	if len(f.logs.lines("within 10% of its lifetime")) == 0 {
		t.Errorf("no near-expiry warning logged:\n%s", f.logs)
	}
	c, tr = client(cfg)
	_, err := c.Get(up.URL)
	if !errors.Is(err, ErrNoSVID) {
		t.Fatalf("after expiry: %v; want ErrNoSVID", err)
	}
	tr.CloseIdleConnections()
	rec := httptest.NewRecorder()
	f.src.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/identity", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "expired") {
		t.Errorf("admin /identity: %d %s", rec.Code, rec.Body)
	}

	agent.SetTTL(30 * time.Second)
	fresh, err := agent.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, f.src, "recovery", func() bool { return f.src.Ready() == nil })
	c, tr = client(cfg)
	defer tr.CloseIdleConnections()
	if got, err := get(c, up.URL); err != nil || got != leafSerial(fresh.Certificates[0]) {
		t.Fatalf("after the agent returned: serial %q, err %v", got, err)
	}
}

// TestStartWithoutAgent: an unreachable Workload API does not block New;
// the source is not ready, handshakes fail with ErrNoSVID, and it becomes
// ready by itself when the agent appears.
func TestStartWithoutAgent(t *testing.T) {
	ca := newCA(t, "example.org")
	dir := shortDir(t)
	agentSrv, err := newStoppedAgent(dir, ca)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agentSrv.Stop)
	f := newSource(t, identityCfg(func(i *configs.Identity) { i.WorkloadAPI = agentSrv.Addr() }))
	err = f.src.Ready()
	if !errors.Is(err, ErrNoSVID) || !strings.Contains(err.Error(), "no SVID has arrived yet") {
		t.Fatalf("Ready() = %v; want a not-ready reason", err)
	}
	up := newUpstream(t, ca, detailsID, ca)
	c, tr := client(upstreamTLS(t, f.src, configs.UpstreamTLS{SPIFFEID: detailsID}))
	defer tr.CloseIdleConnections()
	if _, err := c.Get(up.URL); !errors.Is(err, ErrNoSVID) {
		t.Fatalf("request without an SVID: %v; want ErrNoSVID", err)
	}
	if n := value(f.src.m.handshakeFailures.WithLabelValues(ReasonNoSVID)); n != 1 {
		t.Errorf("no_svid failures %v; want 1", n)
	}
	waitUntil(t, f.src, "a retry error", func() bool { return f.src.Status().LastError != "" })
	if err := agentSrv.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, f.src, "ready", func() bool { return f.src.Ready() == nil })
	if _, err := get(c, up.URL); err != nil {
		t.Fatal(err)
	}
}

// TestAdminAndMetrics checks the /identity document and the metrics.
func TestAdminAndMetrics(t *testing.T) {
	ca := newCA(t, "example.org")
	agent := startAgent(t, ca, 30*time.Second)
	f := newSource(t, identityCfg(func(i *configs.Identity) { i.WorkloadAPI = agent.Addr() }))
	waitUntil(t, f.src, "first SVID", func() bool { return f.src.Ready() == nil })

	rec := httptest.NewRecorder()
	f.src.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/identity", nil))
	var st Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("%d %s (%v)", rec.Code, rec.Body, err)
	}
	leaf := agent.Current().Certificates[0]
	if !st.Ready || st.Source != "workload_api" || st.SVID == nil || st.SVID.SPIFFEID != gatewayID || st.SVID.Serial != leafSerial(leaf) {
		t.Errorf("status %+v", st)
	}
	if len(st.Bundles) != 1 || st.Bundles[0].TrustDomain != "example.org" || st.Bundles[0].AgeSeconds < 0 {
		t.Errorf("bundles %+v", st.Bundles)
	}
	if strings.Contains(rec.Body.String(), "PRIVATE") {
		t.Error("status leaks key material")
	}
	rec = httptest.NewRecorder()
	f.src.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/identity", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}

	if got, want := gathered(t, f.reg, "ztgate_identity_svid_info"), "serial="+leafSerial(leaf)+",spiffe_id="+gatewayID+" 1"; len(got) != 1 || got[0] != want {
		t.Errorf("svid_info %q; want %q", got, want)
	}
	if got := gathered(t, f.reg, "ztgate_identity_ready"); len(got) != 1 || got[0] != " 1" {
		t.Errorf("ready %q; want 1", got)
	}
	if got := gathered(t, f.reg, "ztgate_identity_svid_expiry_timestamp_seconds"); len(got) != 1 || got[0] != fmt.Sprintf(" %g", float64(leaf.NotAfter.Unix())) {
		t.Errorf("expiry %q; want %d", got, leaf.NotAfter.Unix())
	}
	if got := gathered(t, f.reg, "ztgate_identity_bundle_age_seconds"); len(got) != 1 || !strings.HasPrefix(got[0], "source=workload_api,trust_domain=example.org ") {
		t.Errorf("bundle age %q", got)
	}
}

func TestUpstreamTLSRejectsNonSPIFFE(t *testing.T) {
	f := newSource(t, identityCfg(func(i *configs.Identity) {}))
	if _, err := f.src.UpstreamTLS(&configs.UpstreamTLS{CAFile: "/etc/ssl/ca.pem"}); err == nil {
		t.Fatal("want an error for a non-SPIFFE upstream")
	}
	if err := f.src.Ready(); err != nil {
		t.Fatalf("no SVID source configured: Ready() = %v; want nil", err)
	}
}
