package svid

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	spiffefed "github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/ztgate/ztgate/authn/svid/workloadapitest"
	"github.com/ztgate/ztgate/configs"
)

// bundleServer is a foreign trust domain's bundle endpoint (go-spiffe's
// federation handler), whose bundle can be changed.
type bundleServer struct {
	mu   sync.Mutex
	b    *spiffebundle.Bundle
	fail bool
}

func (s *bundleServer) set(ca *workloadapitest.CA, fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = spiffebundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.Cert})
	s.fail = fail
}

func (s *bundleServer) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b, nil
}

func (s *bundleServer) handler(t *testing.T, td spiffeid.TrustDomain) http.Handler {
	h, err := spiffefed.NewHandler(td, s)
	if err != nil {
		t.Fatal(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		fail := s.fail
		s.mu.Unlock()
		if fail {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// TestFederationHTTPSWeb: a foreign bundle is fetched from an https_web
// bundle endpoint, verifies an upstream of that domain, survives a failing
// endpoint, and follows the foreign domain's CA rotation.
func TestFederationHTTPSWeb(t *testing.T) {
	ca := newCA(t, "example.org")
	partner := newCA(t, "partner.org")
	files := newSVIDFiles(t)
	files.write(t, ca, time.Hour)

	bs := &bundleServer{}
	bs.set(partner, false)
	endpoint := httptest.NewTLSServer(bs.handler(t, partner.TrustDomain))
	defer endpoint.Close()
	caFile := filepath.Join(t.TempDir(), "endpoint-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: endpoint.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := files.cfg()
	cfg.Identity.Federation = []configs.Federation{{
		TrustDomain: "partner.org", BundleEndpointURL: endpoint.URL, Profile: configs.ProfileHTTPSWeb,
		CAFile: caFile, RefreshInterval: time.Second,
	}}
	f := newSource(t, cfg)
	hasPartner := func(c *workloadapitest.CA) func() bool {
		return func() bool {
			b, err := f.src.GetX509BundleForTrustDomain(c.TrustDomain)
			return err == nil && b.HasX509Authority(c.Cert)
		}
	}
	waitUntil(t, f.src, "the federated bundle", hasPartner(partner))
	up := newUpstream(t, partner, "spiffe://partner.org/payments", ca)
	cfgTLS := upstreamTLS(t, f.src, configs.UpstreamTLS{TrustDomain: "partner.org"})
	c, tr := client(cfgTLS)
	if _, err := get(c, up.URL); err != nil {
		t.Fatalf("upstream in the federated domain: %v", err)
	}
	tr.CloseIdleConnections()
	st := f.src.Status()
	if len(st.Bundles) != 2 || st.Bundles[1].Source != originFederation || st.Bundles[1].Endpoint != endpoint.URL {
		t.Errorf("bundles %+v", st.Bundles)
	}

	// The endpoint fails: the previous bundle stays, the error is reported.
	bs.set(partner, true)
	waitUntil(t, f.src, "a fetch error", func() bool { return strings.Contains(f.src.Status().LastError, "500") })
	if !hasPartner(partner)() {
		t.Fatal("a failed fetch dropped the bundle")
	}

	// The foreign domain rotates its CA: the next fetch replaces it.
	rotated := newCA(t, "partner.org")
	bs.set(rotated, false)
	waitUntil(t, f.src, "the rotated federated bundle", hasPartner(rotated))
	if hasPartner(partner)() {
		t.Error("the retired CA is still trusted")
	}
	up2 := newUpstream(t, rotated, "spiffe://partner.org/payments", ca)
	c, tr = client(cfgTLS)
	defer tr.CloseIdleConnections()
	if _, err := get(c, up2.URL); err != nil {
		t.Fatalf("upstream under the rotated CA: %v", err)
	}
	if _, err := get(c, up.URL); !errors.Is(err, ErrPeerRejected) {
		t.Fatalf("upstream under the retired CA: %v; want ErrPeerRejected", err)
	}
}

// TestFederationHTTPSSPIFFE: an https_spiffe endpoint is authenticated
// with the bootstrap bundle from trust_bundles and its SPIFFE ID; the
// fetched bundle then replaces the bootstrap one.
func TestFederationHTTPSSPIFFE(t *testing.T) {
	ca := newCA(t, "example.org")
	partner := newCA(t, "partner.org")
	files := newSVIDFiles(t)
	files.write(t, ca, time.Hour)
	const endpointID = "spiffe://partner.org/spire/server"

	bs := &bundleServer{}
	bs.set(partner, false)
	endpoint := httptest.NewUnstartedServer(bs.handler(t, partner.TrustDomain))
	cert, err := tlsconfig.GetCertificate(issue(t, partner, endpointID, time.Hour))(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	endpoint.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	endpoint.StartTLS()
	defer endpoint.Close()

	bootstrap := filepath.Join(t.TempDir(), "partner.pem")
	if err := os.WriteFile(bootstrap, partner.BundlePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, id string
		ok       bool
	}{
		{"right endpoint id", endpointID, true},
		{"wrong endpoint id", "spiffe://partner.org/spire/other", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := files.cfg()
			cfg.Identity.TrustBundles = []configs.TrustBundle{{TrustDomain: "partner.org", File: bootstrap}}
			cfg.Identity.Federation = []configs.Federation{{
				TrustDomain: "partner.org", BundleEndpointURL: endpoint.URL, Profile: configs.ProfileHTTPSSPIFFE,
				EndpointSPIFFEID: tc.id,
			}}
			f := newSource(t, cfg)
			if tc.ok {
				waitUntil(t, f.src, "the fetched bundle", func() bool {
					st := f.src.Status()
					return len(st.Bundles) == 2 && st.Bundles[1].Source == originFederation
				})
				return
			}
			waitUntil(t, f.src, "a fetch error", func() bool { return f.src.Status().LastError != "" })
			if le := f.src.Status().LastError; !strings.Contains(le, "federation partner.org") {
				t.Errorf("last error %q", le)
			}
			if st := f.src.Status(); st.Bundles[1].Source != originStatic {
				t.Errorf("bootstrap bundle replaced after a failed fetch: %+v", st.Bundles)
			}
		})
	}
}
