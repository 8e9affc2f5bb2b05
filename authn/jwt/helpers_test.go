package jwt

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/e2e/testenv"
)

// istioKID is the kid of Istio's sample key (testdata/jwt/jwks.json).
const (
	istioKID    = "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ"
	istioIssuer = "testing@secure.istio.io"
)

var (
	keyOnce  sync.Once
	istioRSA *rsa.PrivateKey
)

// istioKey loads the private key that signed Istio's sample tokens.
func istioKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	path := testenv.Shared(t, "testdata/jwt/key.pem")
	keyOnce.Do(func() {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(data)
		if blk == nil {
			t.Fatal("key.pem: no PEM block")
		}
		k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		istioRSA = k
	})
	if istioRSA == nil {
		t.Fatal("istio key not loaded")
	}
	return istioRSA
}

func sharedToken(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(testenv.Shared(t, "testdata/jwt/"+name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// mint signs claims with key under alg and kid.
func mint(t testing.TB, alg jwa.SignatureAlgorithm, key crypto.Signer, kid string, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	h := jws.NewHeaders()
	_ = h.Set(jws.KeyIDKey, kid)
	_ = h.Set(jws.TypeKey, "JWT")
	out, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(h)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// mintIstio signs claims like Istio's samples (RS256, the sample kid).
func mintIstio(t testing.TB, claims map[string]any) string {
	return mint(t, jwa.RS256, istioKey(t), istioKID, claims)
}

func b64(v any) string {
	var raw []byte
	switch x := v.(type) {
	case string:
		raw = []byte(x)
	default:
		raw, _ = json.Marshal(x)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

// hs256 builds an HMAC token signed with secret (for algorithm confusion).
func hs256(header, claims map[string]any, secret []byte) string {
	in := b64(header) + "." + b64(claims)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func baseClaims() map[string]any {
	now := time.Now()
	return map[string]any{"iss": istioIssuer, "sub": "alice", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
}

// parseConfig loads YAML through configs, as the gateway does.
func parseConfig(t testing.TB, yaml string) *configs.Config {
	t.Helper()
	cfg, err := configs.Parse("test.yaml", []byte(yaml), nil)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// newAuth compiles yaml with a private key cache and metrics registry.
func newAuth(t testing.TB, yaml string) (*Authenticator, *KeyCache, *prometheus.Registry) {
	t.Helper()
	return newAuthWith(t, yaml, testLogger(t))
}

func newAuthLogged(t testing.TB, yaml string, log *slog.Logger) (*Authenticator, *KeyCache) {
	a, k, _ := newAuthWith(t, yaml, log)
	return a, k
}

func newAuthWith(t testing.TB, yaml string, log *slog.Logger) (*Authenticator, *KeyCache, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	keys := NewKeyCache(Deps{Logger: log, Metrics: reg})
	t.Cleanup(keys.Close)
	a, err := New(parseConfig(t, yaml), Deps{Logger: testLogger(t), Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := keys.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	return a, keys, reg
}

type tlogWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *tlogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *tlogWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func sharedJWKSYAML(t testing.TB, extra string) string {
	return `
routes:
  - name: details
    match: { path_prefix: /details }
    direct_response: { status: 200 }
authn:
  jwt:
    - issuer: testing@secure.istio.io
      jwks_file: ` + testenv.Shared(t, "testdata/jwt/jwks.json") + "\n" + extra
}

func sharedJWKSPath(t testing.TB) string { return testenv.Shared(t, "testdata/jwt/jwks.json") }

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
