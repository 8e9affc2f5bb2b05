package jwt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// idp is a JWKS server on loopback HTTPS whose answer the test changes.
type idp struct {
	srv    *httptest.Server
	caFile string
	body   atomic.Pointer[string]
	down   atomic.Bool
	hits   atomic.Int64
}

func newIDP(t *testing.T, jwks string) *idp {
	t.Helper()
	s := &idp{}
	s.body.Store(&jwks)
	s.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if s.down.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fmt.Fprint(w, *s.body.Load())
	}))
	t.Cleanup(s.srv.Close)
	s.caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
	if err := os.WriteFile(s.caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *idp) set(jwks string) { s.body.Store(&jwks) }

func (s *idp) yaml(extra string) string {
	return `
routes:
  - { name: details, match: { path_prefix: /details }, direct_response: { status: 200 } }
authn:
  token_cache_size: -1
  jwt:
    - issuer: testing@secure.istio.io
      jwks_uri: ` + s.srv.URL + `/jwks.json
      jwks_ca: ` + s.caFile + `
      jwks_refresh: 1h
` + extra
}

// jwksWith returns Istio's JWKS plus extra public keys.
func jwksWith(t *testing.T, extra ...jwk.Key) string {
	t.Helper()
	data, err := os.ReadFile(sharedJWKSPath(t))
	if err != nil {
		t.Fatal(err)
	}
	set, err := jwk.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range extra {
		_ = set.AddKey(k)
	}
	out, _ := json.Marshal(set)
	return string(out)
}

func ecKey(t *testing.T, kid string) (*ecdsa.PrivateKey, jwk.Key) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := jwk.FromRaw(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	_ = pub.Set(jwk.KeyIDKey, kid)
	return priv, pub
}

func TestJWKSRotationAndUnknownKidFlood(t *testing.T) {
	s := newIDP(t, jwksWith(t))
	a, keys, _ := newAuth(t, s.yaml("      jwks_refetch_min_interval: 1h\n"))
	uri := s.srv.URL + "/jwks.json"
	fetchesOK := func() float64 { return value(keys.metrics.fetches.WithLabelValues(uri, "ok")) }
	if err := keys.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if _, err := a.Verify(sharedToken(t, "demo.jwt"), "details"); err != nil {
		t.Fatalf("demo.jwt: %v", err)
	}

	// Rotation: the IdP adds an EC key; a token with the new kid triggers
	// one refetch and verifies.
	priv, pub := ecKey(t, "rotated-1")
	s.set(jwksWith(t, pub))
	tok := mint(t, "ES256", priv, "rotated-1", baseClaims())
	id, err := a.Verify(tok, "details")
	if err != nil {
		t.Fatalf("rotated key: %v", err)
	}
	if id.RequestPrincipal != "testing@secure.istio.io/alice" {
		t.Errorf("principal %q", id.RequestPrincipal)
	}
	if got := fetchesOK(); got != 2 {
		t.Fatalf("fetches after rotation %v, want 2 (startup + one refetch)", got)
	}

	// Flood: 8 goroutines x 50 tokens with random kids. The refetch rate
	// limit (1 per hour) allows none of them to reach the IdP.
	hitsBefore := s.hits.Load()
	var wg sync.WaitGroup
	var refused atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				kid := fmt.Sprintf("forged-%d-%d", g, i)
				if _, err := a.Verify(mint(t, "ES256", priv, kid, baseClaims()), "details"); ReasonOf(err) == ReasonUnknownKey {
					refused.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if refused.Load() != 400 {
		t.Errorf("%d of 400 forged kids refused as unknown_kid", refused.Load())
	}
	if got := s.hits.Load() - hitsBefore; got != 0 {
		t.Errorf("IdP received %d requests during the flood, want 0", got)
	}
	if got := value(keys.metrics.refetchLimited.WithLabelValues(uri)); got != 400 {
		t.Errorf("refetch_limited %v, want 400", got)
	}
	if _, err := a.Verify(tok, "details"); err != nil {
		t.Errorf("known key refused after the flood: %v", err)
	}
}

func TestJWKSIdPDown(t *testing.T) {
	s := newIDP(t, jwksWith(t))
	// A tiny refetch interval: every unknown kid reaches the IdP, so the
	// test can make fetches fail on demand.
	logs := &tlogWriter{}
	a, keys := newAuthLogged(t, s.yaml("      jwks_refetch_min_interval: 1ns\n"), slog.New(slog.NewTextHandler(logs, nil)))
	uri := s.srv.URL + "/jwks.json"
	s.down.Store(true)
	_, err := a.Verify(mint(t, "RS256", istioKey(t), "new-kid", baseClaims()), "details")
	if ReasonOf(err) != ReasonUnknownKey {
		t.Fatalf("unknown kid while IdP down: %v", err)
	}
	if got := value(keys.metrics.fetches.WithLabelValues(uri, "error")); got != 1 {
		t.Errorf("failed fetches %v, want 1", got)
	}
	// Cached keys keep working (the token cache is off, so this is a
	// real signature check with the last good keys).
	for i := 0; i < 3; i++ {
		if _, err := a.Verify(mintIstio(t, baseClaims()), "details"); err != nil {
			t.Fatalf("cached keys refused a valid token while the IdP is down: %v", err)
		}
	}
	// The IdP comes back with an empty JWKS: refused, the good keys stay.
	s.down.Store(false)
	s.set(`{"keys":[]}`)
	if _, err := a.Verify(mint(t, "RS256", istioKey(t), "newer-kid", baseClaims()), "details"); ReasonOf(err) != ReasonUnknownKey {
		t.Fatalf("unknown kid with empty JWKS: %v", err)
	}
	if _, err := a.Verify(mintIstio(t, baseClaims()), "details"); err != nil {
		t.Fatalf("an empty JWKS replaced the good keys: %v", err)
	}
	if got := value(keys.metrics.fetches.WithLabelValues(uri, "error")); got != 2 {
		t.Errorf("failed fetches %v, want 2", got)
	}
	if err := keys.Ready(); err != nil {
		t.Errorf("Ready with last good keys: %v", err)
	}
	if l := logs.String(); !strings.Contains(l, "keeping the last good keys") || !strings.Contains(l, "status 503") || !strings.Contains(l, "jwks="+uri) {
		t.Errorf("log %q does not report the failed fetch", l)
	}
}

func TestJWKSMalformedAtStartup(t *testing.T) {
	s := newIDP(t, `{"keys": [ {"kty": "RSA"`)
	a, keys, _ := newAuth(t, s.yaml("      jwks_refetch_min_interval: 1ns\n"))
	err := keys.Ready()
	if err == nil || !strings.Contains(err.Error(), s.srv.URL) || !strings.Contains(err.Error(), "not a valid JWKS") {
		t.Fatalf("Ready = %v, want it to name the URL and the parse error", err)
	}
	tok := sharedToken(t, "demo.jwt")
	// Still broken: the request-triggered refetch fails too.
	if _, err := a.Verify(tok, "details"); ReasonOf(err) != ReasonNoKeys {
		t.Fatalf("verify without keys: %v, want jwks_unavailable", err)
	}
	// The IdP is fixed: the next request's refetch loads the keys.
	s.set(jwksWith(t))
	if _, err := a.Verify(tok, "details"); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	if err := keys.Ready(); err != nil {
		t.Errorf("Ready after recovery: %v", err)
	}
}

func TestKeyCacheSurvivesReload(t *testing.T) {
	s := newIDP(t, jwksWith(t))
	a1, keys, _ := newAuth(t, s.yaml(""))
	if s.hits.Load() != 1 {
		t.Fatalf("hits %d", s.hits.Load())
	}
	// Reload: a new Authenticator with the same jwks_uri reuses the entry.
	a2, err := New(parseConfig(t, s.yaml("")), Deps{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	a1.Close()
	if _, err := a2.Verify(sharedToken(t, "demo.jwt"), "details"); err != nil {
		t.Fatalf("after reload: %v", err)
	}
	if s.hits.Load() != 1 {
		t.Errorf("reload refetched the JWKS (%d hits)", s.hits.Load())
	}
	a2.Close()
	keys.mu.Lock()
	n := len(keys.entries)
	keys.mu.Unlock()
	if n != 0 {
		t.Errorf("%d entries left after the last user closed", n)
	}
}

func TestMaxAge(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"max-age=60": time.Minute, "public, max-age=\"30\"": 30 * time.Second, "no-cache": 0,
		"max-age=-1": 0, "max-age=999999999": 24 * time.Hour, "": 0, "MAX-AGE=5": 5 * time.Second,
	} {
		if got := maxAgeOf(in); got != want {
			t.Errorf("maxAgeOf(%q) = %v, want %v", in, got, want)
		}
	}
}
