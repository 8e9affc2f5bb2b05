package peer

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/authn"
	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/e2e/testenv"
)

const gatewayID = "spiffe://example.org/ns/ztgate/sa/gateway"

type syncBuf struct {
	mu    sync.Mutex
	b     bytes.Buffer
	once  sync.Once
	wrote chan struct{} // closed by the first Write
}

func newSyncBuf() *syncBuf { return &syncBuf{wrote: make(chan struct{})} }

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.once.Do(func() { close(s.wrote) })
	return s.b.Write(p)
}
func (s *syncBuf) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// server is a small HTTPS server using the peer settings the way the
// gateway does: Apply on the listener's tls.Config, FromConnectionState
// per request, an access log line, XFCC towards the "upstream" (echoed).
type server struct {
	srv    *httptest.Server
	caFile string // the server certificate, for curl --cacert
	log    *syncBuf
	tlsLog *syncBuf // http.Server.ErrorLog: handshake failures
	served atomic.Int64
}

func startServer(t *testing.T, mode Mode, bundles *configs.PeerAuthentication) *server {
	t.Helper()
	set, err := LoadBundles(bundles.TrustBundles)
	if err != nil {
		t.Fatal(err)
	}
	settings, err := ServerTLS(mode, set)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{log: newSyncBuf(), tlsLog: newSyncBuf()}
	logger := slog.New(slog.NewJSONHandler(s.log, nil))
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.served.Add(1)
		p, err := FromConnectionState(r.TLS)
		if err != nil {
			http.Error(w, "bad peer", http.StatusForbidden)
			return
		}
		principal, xfcc := "", ""
		if p != nil {
			principal, xfcc = p.Principal, p.XFCC(gatewayID)
		}
		logger.Info("access", authn.LogFieldPrincipal, principal, "path", r.URL.Path)
		json.NewEncoder(w).Encode(map[string]string{"principal": principal, "xfcc": xfcc})
	}))
	s.srv.Config.ErrorLog = stdlog.New(s.tlsLog, "", 0)
	s.srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	settings.Apply(s.srv.TLS)
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	s.caFile = filepath.Join(t.TempDir(), "server-ca.pem")
	os.WriteFile(s.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw}), 0o600)
	return s
}

type pki struct {
	dir                 string
	bundle              *configs.PeerAuthentication
	sleepCert, sleepKey string
	rogueCert, rogueKey string
	sleep               tls.Certificate
	org, other          *ca
}

func newPKI(t testing.TB) *pki {
	p := &pki{dir: t.TempDir()}
	p.org = newCA(t, "example.org")
	p.other = newCA(t, "example.org") // same trust domain, not trusted
	p.sleep = p.org.leaf(t, "sleep", "spiffe://example.org/ns/default/sa/sleep")
	p.sleepCert, p.sleepKey = writeCertKey(t, p.dir, "sleep", p.sleep)
	p.rogueCert, p.rogueKey = writeCertKey(t, p.dir, "rogue", p.other.leaf(t, "rogue", "spiffe://example.org/ns/default/sa/sleep"))
	p.bundle = &configs.PeerAuthentication{TrustBundles: []configs.TrustBundle{{TrustDomain: "example.org", File: p.org.writePEM(t, p.dir, "bundle.pem")}}}
	return p
}

// curl runs curl against the server; it returns the body and whether curl succeeded.
func curl(t *testing.T, s *server, certKey ...string) (string, error) {
	t.Helper()
	args := []string{"-sS", "--max-time", "10", "--cacert", s.caFile}
	if len(certKey) == 2 {
		args = append(args, "--cert", certKey[0], "--key", certKey[1])
	}
	args = append(args, s.srv.URL+"/productpage")
	var stderr bytes.Buffer
	cmd := exec.Command(testenv.Tool(t, "curl"), args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return string(out), nil
}

func TestModesWithCurl(t *testing.T) {
	testenv.Tool(t, "curl")
	p := newPKI(t)
	tests := []struct {
		mode      Mode
		cert      []string
		ok        bool
		principal string
	}{
		{Strict, nil, false, ""},
		{Strict, []string{p.sleepCert, p.sleepKey}, true, "example.org/ns/default/sa/sleep"},
		{Strict, []string{p.rogueCert, p.rogueKey}, false, ""},
		{Permissive, nil, true, ""},
		{Permissive, []string{p.sleepCert, p.sleepKey}, true, "example.org/ns/default/sa/sleep"},
		{Permissive, []string{p.rogueCert, p.rogueKey}, false, ""},
		{Disable, nil, true, ""},
		{Disable, []string{p.sleepCert, p.sleepKey}, true, ""}, // no certificate is requested
	}
	for _, tc := range tests {
		name := fmt.Sprintf("%s/cert=%v", tc.mode, len(tc.cert) > 0)
		if len(tc.cert) > 0 && strings.Contains(tc.cert[0], "rogue") {
			name += "-untrusted"
		}
		t.Run(name, func(t *testing.T) {
			s := startServer(t, tc.mode, p.bundle)
			body, err := curl(t, s, tc.cert...)
			if !tc.ok {
				if err == nil {
					t.Fatalf("curl succeeded: %s", body)
				}
				if s.served.Load() != 0 {
					t.Fatalf("the handler ran for a refused client")
				}
				// The refusal happens in the handshake (curl sees an alert
				// or a reset), and the server logs why.
				var ee *exec.ExitError
				if !errors.As(err, &ee) || (ee.ExitCode() != 35 && ee.ExitCode() != 55 && ee.ExitCode() != 56) {
					t.Errorf("curl error %v is not a TLS-level failure", err)
				}
				select { // the server logs after it sent the alert
				case <-s.tlsLog.wrote:
				case <-time.After(10 * time.Second):
				}
				if !strings.Contains(s.tlsLog.String(), "TLS handshake error") {
					t.Errorf("server log %q does not show the refused handshake", s.tlsLog.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("curl: %v", err)
			}
			var got map[string]string
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if got["principal"] != tc.principal {
				t.Errorf("principal %q, want %q", got["principal"], tc.principal)
			}
			if tc.principal == "" {
				return
			}
			if !strings.Contains(s.log.String(), `"principal":"`+tc.principal+`"`) {
				t.Errorf("access log %q lacks the principal", s.log.String())
			}
			elems, err := authn.ParseXFCC(got["xfcc"])
			if err != nil || len(elems) != 1 {
				t.Fatalf("XFCC %q: %v", got["xfcc"], err)
			}
			e := elems[0]
			if e.Get("URI") != "spiffe://"+tc.principal || e.Get("By") != gatewayID || len(e.Get("Hash")) != 64 || e.Get("Subject") != "CN=sleep,O=ztgate\\, tests" {
				t.Errorf("XFCC %q parsed as %v", got["xfcc"], e)
			}
		})
	}
}

// TestCertificateShapes checks the SPIFFE rules with Go's client (no
// curl needed): one URI SAN, a valid SPIFFE ID, the right trust domain.
func TestCertificateShapes(t *testing.T) {
	p := newPKI(t)
	otherTD := newCA(t, "other.test")
	tests := []struct {
		name string
		cert tls.Certificate
		ok   bool
	}{
		{"valid SVID", p.sleep, true},
		{"two URI SANs", p.org.leaf(t, "two", "spiffe://example.org/ns/a/sa/b", "spiffe://example.org/ns/c/sa/d"), false},
		{"no URI SAN", p.org.leaf(t, "plain"), false},
		{"not a SPIFFE URI", p.org.leaf(t, "https", "https://example.org/ns/a/sa/b"), false},
		{"invalid SPIFFE path", p.org.leaf(t, "dots", "spiffe://example.org/ns/../sa/b"), false},
		{"uppercase trust domain", p.org.leaf(t, "upper", "spiffe://EXAMPLE.org/ns/a/sa/b"), false},
		{"other trust domain, no bundle", otherTD.leaf(t, "o", "spiffe://other.test/ns/a/sa/b"), false},
		{"trust domain mismatch with issuer", p.org.leaf(t, "m", "spiffe://other.test/ns/a/sa/b"), false},
	}
	s := startServer(t, Permissive, p.bundle)
	pool := s.srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
				RootCAs: pool, Certificates: []tls.Certificate{tc.cert}, MinVersion: tls.VersionTLS12,
			}}}
			defer c.CloseIdleConnections()
			resp, err := c.Get(s.srv.URL + "/")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if tc.ok != (err == nil) {
				t.Fatalf("ok=%v, err=%v", tc.ok, err)
			}
		})
	}
}

func TestFromCertificate(t *testing.T) {
	c := newCA(t, "example.org")
	for _, tc := range []struct{ uri, principal, ns, sa string }{
		{"spiffe://example.org/ns/default/sa/sleep", "example.org/ns/default/sa/sleep", "default", "sleep"},
		{"spiffe://example.org/workload/x", "example.org/workload/x", "", ""},
		{"spiffe://example.org/ns/prod", "example.org/ns/prod", "prod", ""},
	} {
		leaf := c.leaf(t, "x", tc.uri)
		p, err := FromCertificate(leaf.Leaf)
		if err != nil {
			t.Fatal(err)
		}
		if p.Principal != tc.principal || p.Namespace != tc.ns || p.ServiceAccount != tc.sa || p.TrustDomain != "example.org" || p.SPIFFEID != tc.uri {
			t.Errorf("%s → %+v", tc.uri, p)
		}
	}
	if p, err := FromConnectionState(nil); p != nil || err != nil {
		t.Errorf("nil state: %v %v", p, err)
	}
	if _, err := FromCertificate(c.leaf(t, "two", "spiffe://example.org/a", "spiffe://example.org/b").Leaf); err == nil {
		t.Error("two URI SANs accepted")
	}
}

func TestModesAndRequire(t *testing.T) {
	for _, s := range []string{"STRICT", "PERMISSIVE", "DISABLE"} {
		m, err := ParseMode(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := ParseMode("strict"); err == nil {
		t.Error("lowercase mode accepted")
	}
	if _, err := ServerTLS(Strict, nil); err == nil {
		t.Error("STRICT without bundles accepted")
	}
	if !errors.Is(Require(Strict, nil), ErrPeerRequired) || Require(Strict, &authn.Peer{}) != nil || Require(Permissive, nil) != nil {
		t.Error("Require")
	}
}

func TestFromConfig(t *testing.T) {
	p := newPKI(t)
	partner := newCA(t, "partner.test")
	workload := x509bundle.NewSet(x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("partner.test"), []*x509.Certificate{partner.cert}))
	s, err := FromConfig(configs.PeerAuthentication{Mode: "STRICT", TrustBundles: p.bundle.TrustBundles}, workload)
	if err != nil {
		t.Fatal(err)
	}
	if s.ClientAuth() != tls.RequireAnyClientCert {
		t.Errorf("ClientAuth %v", s.ClientAuth())
	}
	for _, tc := range []struct {
		name string
		cert tls.Certificate
		ok   bool
	}{
		{"file bundle", p.sleep, true},
		{"workload bundle", partner.leaf(t, "p", "spiffe://partner.test/ns/x/sa/y"), true},
		{"no bundle", newCA(t, "nobody.test").leaf(t, "n", "spiffe://nobody.test/a"), false},
	} {
		err := s.VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{tc.cert.Leaf}})
		if tc.ok != (err == nil) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if err := s.VerifyConnection(tls.ConnectionState{}); err == nil {
		t.Error("STRICT accepted a connection without a certificate")
	}
	if d, err := FromConfig(configs.PeerAuthentication{Mode: "DISABLE"}, nil); err != nil || d.ClientAuth() != tls.NoClientCert {
		t.Errorf("DISABLE: %v", err)
	}
	var typedNil *x509bundle.Set
	if _, err := FromConfig(configs.PeerAuthentication{Mode: "PERMISSIVE"}, typedNil); err == nil {
		t.Error("PERMISSIVE with a typed-nil bundle source accepted")
	}
	if _, err := FromConfig(configs.PeerAuthentication{Mode: "PERMISSIVE"}, nil); err == nil {
		t.Error("PERMISSIVE without any bundle source accepted")
	}
}

func TestForwardClientCert(t *testing.T) {
	pr := &authn.Peer{SPIFFEID: "spiffe://example.org/ns/a/sa/b", CertSHA256: "00", Subject: "CN=b"}
	for _, tc := range []struct {
		mode string
		peer *authn.Peer
		want string
	}{
		{configs.XFCCSanitize, pr, ""},
		{configs.XFCCSanitizeSet, nil, ""},
		{configs.XFCCSanitizeSet, pr, `By=spiffe://gw/x;Hash=00;Subject="CN=b";URI=spiffe://example.org/ns/a/sa/b`},
	} {
		h := http.Header{XFCCHeader: {"By=forged;URI=spiffe://example.org/ns/admin/sa/root"}}
		ForwardClientCert(h, tc.mode, tc.peer, "spiffe://gw/x")
		if got := h.Values(XFCCHeader); len(got) > 1 || h.Get(XFCCHeader) != tc.want {
			t.Errorf("%s peer=%v: %q, want %q", tc.mode, tc.peer != nil, got, tc.want)
		}
	}
}
