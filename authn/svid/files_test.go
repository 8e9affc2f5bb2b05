package svid

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ztgate/ztgate/authn/svid/workloadapitest"
	"github.com/ztgate/ztgate/configs"
)

type svidFiles struct{ cert, key, bundle string }

func newSVIDFiles(t *testing.T) svidFiles {
	d := t.TempDir()
	return svidFiles{filepath.Join(d, "svid.pem"), filepath.Join(d, "svid_key.pem"), filepath.Join(d, "bundle.pem")}
}

func (p svidFiles) write(t *testing.T, ca *workloadapitest.CA, ttl time.Duration) string {
	t.Helper()
	sv := issue(t, ca, gatewayID, ttl)
	if err := workloadapitest.WriteFiles(sv, ca, p.cert, p.key, p.bundle); err != nil {
		t.Fatal(err)
	}
	return leafSerial(sv.Certificates[0])
}

func (p svidFiles) cfg() *configs.Config {
	return identityCfg(func(i *configs.Identity) {
		i.Files = &configs.IdentityFiles{Cert: p.cert, Key: p.key, Bundle: p.bundle}
	})
}

// TestFilesRewrittenUnderLoad: the SVID files are rewritten while
// requests flow. A truncated file and a cert/key pair caught mid-write
// are ignored (old SVID kept, logged); a good set is picked up.
func TestFilesRewrittenUnderLoad(t *testing.T) {
	ca := newCA(t, "example.org")
	files := newSVIDFiles(t)
	first := files.write(t, ca, time.Hour)
	f := newSource(t, files.cfg())
	if err := f.src.Ready(); err != nil {
		t.Fatalf("files present at start: Ready() = %v", err)
	}
	up := newUpstream(t, ca, detailsID, ca)
	c, tr := client(upstreamTLS(t, f.src, configs.UpstreamTLS{SPIFFEID: detailsID}))
	defer tr.CloseIdleConnections()
	invalid := func() float64 { return value(f.src.m.sourceErrors.WithLabelValues("files", "invalid")) }

	// Bounded load in the background for the whole rewrite sequence.
	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		requests atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// Dial fresh now and then so handshakes see each state.
				if i%10 == 0 {
					tr.CloseIdleConnections()
				}
				if _, err := get(c, up.URL); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				requests.Add(1)
			}
		}()
	}

	steps := []struct {
		name  string
		write func(t *testing.T)
	}{
		{"truncated cert", func(t *testing.T) {
			data, err := os.ReadFile(files.cert)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(files.cert, data[:len(data)/2], 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"new cert with the old key", func(t *testing.T) {
			sv := issue(t, ca, gatewayID, time.Hour)
			certPEM, _, err := sv.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(files.cert, certPEM, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"empty bundle", func(t *testing.T) {
			if err := os.WriteFile(files.bundle, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, st := range steps {
		before := invalid()
		st.write(t)
		waitUntil(t, f.src, st.name+" rejected", func() bool { return invalid() > before })
		if got := currentSerial(f.src); got != first {
			t.Fatalf("%s: serial %s; want the old %s kept", st.name, got, first)
		}
		if len(f.logs.lines("half-written")) == 0 {
			t.Fatalf("%s: no log line", st.name)
		}
		// A new connection now still presents the old, valid SVID.
		c2, tr2 := client(upstreamTLS(t, f.src, configs.UpstreamTLS{SPIFFEID: detailsID}))
		got, err := get(c2, up.URL)
		tr2.CloseIdleConnections()
		if err != nil || got != first {
			t.Fatalf("%s: new connection presented %q (%v); want the old %s", st.name, got, err, first)
		}
	}
	second := files.write(t, ca, time.Hour)
	waitUntil(t, f.src, "the good files", func() bool { return currentSerial(f.src) == second })
	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed while files were rewritten; first: %v", n, requests.Load(), firstErr.Load())
	}
	tr.CloseIdleConnections()
	if got, err := get(c, up.URL); err != nil || got != second {
		t.Fatalf("new connection presented %q (%v); want %s", got, err, second)
	}
	if f.src.Status().LastError != "" {
		t.Errorf("last error not cleared after a good set: %q", f.src.Status().LastError)
	}
}

// TestFilesAppearLater: files that do not exist yet leave the gateway not
// ready without failing New.
func TestFilesAppearLater(t *testing.T) {
	ca := newCA(t, "example.org")
	files := newSVIDFiles(t)
	f := newSource(t, files.cfg())
	if err := f.src.Ready(); !errors.Is(err, ErrNoSVID) {
		t.Fatalf("Ready() = %v; want ErrNoSVID", err)
	}
	serial := files.write(t, ca, time.Hour)
	waitUntil(t, f.src, "files", func() bool { return currentSerial(f.src) == serial })
}

// TestFilesRejectExpiredAndForeign: a set that does not verify or has the
// wrong ID never becomes the identity.
func TestFilesRejectExpiredAndForeign(t *testing.T) {
	ca := newCA(t, "example.org")
	other := newCA(t, "example.org")
	tests := []struct {
		name  string
		write func(p svidFiles) error
		want  string
	}{
		{"expired", func(p svidFiles) error {
			sv, err := ca.Issue(gatewayID, -time.Millisecond)
			if err != nil {
				return err
			}
			return workloadapitest.WriteFiles(sv, ca, p.cert, p.key, p.bundle)
		}, "does not verify"},
		{"other CA", func(p svidFiles) error {
			sv, err := other.Issue(gatewayID, time.Hour)
			if err != nil {
				return err
			}
			return workloadapitest.WriteFiles(sv, ca, p.cert, p.key, p.bundle)
		}, "does not verify"},
		{"wrong id", func(p svidFiles) error {
			sv, err := ca.Issue("spiffe://example.org/ns/edge/sa/other", time.Hour)
			if err != nil {
				return err
			}
			return workloadapitest.WriteFiles(sv, ca, p.cert, p.key, p.bundle)
		}, "identity.spiffe_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newSVIDFiles(t)
			if err := tc.write(p); err != nil {
				t.Fatal(err)
			}
			cfg := p.cfg()
			cfg.Identity.SPIFFEID = gatewayID
			f := newSource(t, cfg)
			err := f.src.Ready()
			if !errors.Is(err, ErrNoSVID) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Ready() = %v; want ErrNoSVID mentioning %q", err, tc.want)
			}
		})
	}
}

// TestStaticTrustBundles: identity.trust_bundles verify upstreams of
// another trust domain (PEM and SPIFFE JSON), and a rewritten file is
// re-read.
func TestStaticTrustBundles(t *testing.T) {
	ca := newCA(t, "example.org")
	partner := newCA(t, "partner.org")
	files := newSVIDFiles(t)
	files.write(t, ca, time.Hour)
	bundleFile := filepath.Join(t.TempDir(), "partner.pem")
	stale := newCA(t, "partner.org")
	if err := os.WriteFile(bundleFile, stale.BundlePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := files.cfg()
	cfg.Identity.TrustBundles = []configs.TrustBundle{{TrustDomain: "partner.org", File: bundleFile}}
	f := newSource(t, cfg)
	up := newUpstream(t, partner, "spiffe://partner.org/payments", ca)
	c, tr := client(upstreamTLS(t, f.src, configs.UpstreamTLS{TrustDomain: "partner.org"}))
	defer tr.CloseIdleConnections()
	if _, err := c.Get(up.URL); !errors.Is(err, ErrPeerRejected) {
		t.Fatalf("with a stale partner bundle: %v; want ErrPeerRejected", err)
	}
	// Rewrite as a SPIFFE bundle document (JWKS), as bundle endpoints serve.
	doc, err := spiffeBundleJSON(partner)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundleFile, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, f.src, "the new static bundle", func() bool {
		b, err := f.src.GetX509BundleForTrustDomain(partner.TrustDomain)
		return err == nil && b.HasX509Authority(partner.Cert)
	})
	tr.CloseIdleConnections()
	if _, err := get(c, up.URL); err != nil {
		t.Fatalf("with the partner bundle: %v", err)
	}
	st := f.src.Status()
	if len(st.Bundles) != 2 || st.Bundles[1].Source != originStatic || st.Bundles[1].File != bundleFile {
		t.Errorf("bundles %+v", st.Bundles)
	}
}

// TestApply: an unchanged section keeps the running source; a changed one
// replaces it; a bad one changes nothing.
func TestApply(t *testing.T) {
	ca := newCA(t, "example.org")
	agent := startAgent(t, ca, 30*time.Second)
	cfg := identityCfg(func(i *configs.Identity) { i.WorkloadAPI = agent.Addr() })
	f := newSource(t, cfg)
	waitUntil(t, f.src, "first SVID", func() bool { return f.src.Ready() == nil })
	run := f.src.run

	same := identityCfg(func(i *configs.Identity) { i.WorkloadAPI = agent.Addr() })
	if err := f.src.Apply(same); err != nil {
		t.Fatal(err)
	}
	if f.src.run != run {
		t.Fatal("an unchanged identity section restarted the source")
	}

	bad := identityCfg(func(i *configs.Identity) {
		i.WorkloadAPI = agent.Addr()
		i.TrustBundles = []configs.TrustBundle{{TrustDomain: "partner.org", File: filepath.Join(t.TempDir(), "missing.pem")}}
	})
	if err := f.src.Apply(bad); err == nil || !strings.Contains(err.Error(), "trust_bundles[0]") {
		t.Fatalf("Apply(bad) = %v; want a trust_bundles[0] error", err)
	}
	if f.src.run != run || f.src.Ready() != nil {
		t.Fatal("a failed Apply changed the source")
	}

	files := newSVIDFiles(t)
	serial := files.write(t, ca, time.Hour)
	if err := f.src.Apply(files.cfg()); err != nil {
		t.Fatal(err)
	}
	if f.src.run == run || currentSerial(f.src) != serial || f.src.Status().Source != "files" {
		t.Fatalf("after switching to files: %+v", f.src.Status())
	}
	if err := f.src.Apply(identityCfg(func(i *configs.Identity) {})); err != nil {
		t.Fatal(err)
	}
	if _, err := f.src.GetX509SVID(); !errors.Is(err, ErrNoSVID) || f.src.Ready() != nil {
		t.Fatal("identity removed: want no SVID and Ready() nil")
	}
}
