package jwt

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// gate is the edge the gateway will have: authenticate, map an *Error to
// 401 + WWW-Authenticate, log the reason once (never the token).
func gate(a *Authenticator, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := a.Authenticate(r, "details")
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				http.Error(w, "internal error", http.StatusInternalServerError)
				return
			}
			log.LogAttrs(r.Context(), slog.LevelInfo, "request denied", LogAttrs(err)...)
			w.Header().Set("WWW-Authenticate", WWWAuthenticate)
			http.Error(w, "Jwt verification fails", http.StatusUnauthorized)
			return
		}
		if id == nil {
			io.WriteString(w, "anonymous")
			return
		}
		io.WriteString(w, id.RequestPrincipal)
	})
}

func TestIstioSamples(t *testing.T) {
	a, _, reg := newAuth(t, sharedJWKSYAML(t, ""))
	logs := &tlogWriter{}
	srv := httptest.NewServer(gate(a, slog.New(slog.NewTextHandler(logs, nil))))
	defer srv.Close()

	key := istioKey(t)
	demo := sharedToken(t, "demo.jwt")
	now := time.Now()
	claims := func(edit func(map[string]any)) map[string]any {
		c := baseClaims()
		edit(c)
		return c
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	parts := strings.Split(demo, ".")
	tampered := parts[0] + "." + b64(map[string]any{"iss": istioIssuer, "sub": "admin@secure.istio.io", "exp": 4685989700}) + "." + parts[2]

	tests := []struct {
		name      string
		token     string
		want      int
		principal string
		reason    Reason
	}{
		{name: "demo.jwt", token: demo, want: 200, principal: "testing@secure.istio.io/testing@secure.istio.io"},
		{name: "groups-scope.jwt", token: sharedToken(t, "groups-scope.jwt"), want: 200, principal: "testing@secure.istio.io/testing@secure.istio.io"},
		{name: "minted", token: mintIstio(t, baseClaims()), want: 200, principal: "testing@secure.istio.io/alice"},
		{name: "no token", want: 200},
		{name: "tampered payload", token: tampered, want: 401, reason: ReasonBadSignature},
		{name: "tampered signature", token: parts[0] + "." + parts[1] + "." + flip(parts[2]), want: 401, reason: ReasonBadSignature},
		{name: "wrong issuer", token: mintIstio(t, claims(func(c map[string]any) { c["iss"] = "evil.example" })), want: 401, reason: ReasonBadIssuer},
		{name: "expired", token: mintIstio(t, claims(func(c map[string]any) { c["exp"] = now.Add(-2 * time.Hour).Unix() })), want: 401, reason: ReasonExpired},
		{name: "expired within skew", token: mintIstio(t, claims(func(c map[string]any) { c["exp"] = now.Add(-10 * time.Second).Unix() })), want: 200, principal: "testing@secure.istio.io/alice"},
		{name: "nbf in future", token: mintIstio(t, claims(func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() })), want: 401, reason: ReasonNotYetValid},
		{name: "iat in future", token: mintIstio(t, claims(func(c map[string]any) { c["iat"] = now.Add(time.Hour).Unix() })), want: 401, reason: ReasonIssuedInFuture},
		{name: "exp not a number", token: mintIstio(t, claims(func(c map[string]any) { c["exp"] = "tomorrow" })), want: 401, reason: ReasonBadClaims},
		{name: "alg none", token: b64(map[string]any{"alg": "none", "typ": "JWT"}) + "." + b64(baseClaims()) + ".", want: 401, reason: ReasonAlgNotAllowed},
		{name: "HS256 with the RSA public key", token: hs256(map[string]any{"alg": "HS256", "kid": istioKID}, baseClaims(), pubPEM), want: 401, reason: ReasonAlgNotAllowed},
		{name: "HS256 with the RSA public key DER", token: hs256(map[string]any{"alg": "HS256"}, baseClaims(), pubDER), want: 401, reason: ReasonAlgNotAllowed},
		{name: "unknown kid", token: mint(t, "RS256", key, "other-kid", baseClaims()), want: 401, reason: ReasonUnknownKey},
		{name: "100 KB token", token: mintIstio(t, claims(func(c map[string]any) { c["pad"] = strings.Repeat("x", 100<<10) })), want: 401, reason: ReasonTooLarge},
		{name: "garbage", token: "garbage", want: 401, reason: ReasonMalformed},
		{name: "garbage three segments", token: "a.b.c", want: 401, reason: ReasonMalformed},
		{name: "header not json", token: b64("not json") + "." + b64(baseClaims()) + ".sig", want: 401, reason: ReasonMalformed},
		{name: "payload not an object", token: mint(t, "RS256", key, istioKID, nil), want: 401, reason: ReasonMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := logs.String()
			req, _ := http.NewRequest("GET", srv.URL+"/details/0", nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (body %q, log %q)", resp.StatusCode, tc.want, body, strings.TrimPrefix(logs.String(), before))
			}
			logged := strings.TrimPrefix(logs.String(), before)
			if tc.want == 401 {
				if got := resp.Header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
					t.Errorf("WWW-Authenticate %q", got)
				}
				if !strings.Contains(logged, "reason="+tc.reason.String()) {
					t.Errorf("log %q lacks reason=%s", logged, tc.reason)
				}
				if len(tc.token) > 20 && strings.Contains(logged, tc.token[len(tc.token)-20:]) {
					t.Errorf("log leaks the token: %q", logged)
				}
				return
			}
			want := tc.principal
			if want == "" {
				want = "anonymous"
			}
			if string(body) != want {
				t.Errorf("principal %q, want %q", body, want)
			}
		})
	}
	if n := value(a.metrics.verifications.WithLabelValues("testing@secure.istio.io", "expired")); n != 1 {
		t.Errorf("expired counted %v times, want 1", n)
	}
	_ = reg
}

func TestAudienceAndAlgorithms(t *testing.T) {
	a, _, _ := newAuth(t, sharedJWKSYAML(t, `      audiences: [details.example, bookinfo]
      algorithms: [RS384]
`))
	key := istioKey(t)
	withAud := func(aud any) map[string]any { c := baseClaims(); c["aud"] = aud; return c }
	tests := []struct {
		name   string
		token  string
		reason Reason
	}{
		{"aud string matches", mint(t, "RS384", key, istioKID, withAud("bookinfo")), 0},
		{"aud list matches", mint(t, "RS384", key, istioKID, withAud([]string{"x", "details.example"})), 0},
		{"wrong audience", mint(t, "RS384", key, istioKID, withAud("ratings")), ReasonBadAudience},
		{"no audience", mint(t, "RS384", key, istioKID, baseClaims()), ReasonBadAudience},
		{"RS256 not in allowlist", mint(t, "RS256", key, istioKID, withAud("bookinfo")), ReasonAlgNotAllowed},
		{"PS256 not in allowlist", mint(t, "PS256", key, istioKID, withAud("bookinfo")), ReasonAlgNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := a.Verify(tc.token, "details")
			if got := ReasonOf(err); got != tc.reason {
				t.Fatalf("reason %v (err %v), want %v", got, err, tc.reason)
			}
			if tc.reason == 0 && (id == nil || len(id.Audiences) == 0) {
				t.Fatalf("identity %+v", id)
			}
		})
	}
}

func TestKeyTypeFits(t *testing.T) {
	ks, err := parseJWKS([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}, {"e":"AQAB","kid":"r","kty":"RSA","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(ks.all) != 1 {
		t.Fatalf("kept %d keys, want only the RSA one (oct keys are never used)", len(ks.all))
	}
	for _, alg := range []string{"HS256", "none", "ES256", "EdDSA", ""} {
		if len(ks.candidates("", alg)) != 0 {
			t.Errorf("alg %q found an RSA key", alg)
		}
	}
	if len(ks.candidates("r", "PS512")) != 1 {
		t.Error("PS512 should use the RSA key")
	}
	for _, bad := range []string{`{"keys":[]}`, `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`, `not json`, `{"keys":[{"kty":"RSA","n":"","e":""}]}`} {
		if _, err := parseJWKS([]byte(bad)); err == nil {
			t.Errorf("parseJWKS(%q) accepted", bad)
		}
	}
}

func TestExtractionForwardAndClaimHeaders(t *testing.T) {
	a, _, _ := newAuth(t, sharedJWKSYAML(t, `      from_headers: [{name: X-Jwt, prefix: "Token "}, {name: Authorization, prefix: "Bearer "}]
      from_params: [jwt]
      from_cookies: [session]
      output_claim_to_headers:
        - { header: X-Jwt-Sub, claim: sub }
        - { header: X-Jwt-Groups, claim: groups }
        - { header: X-Jwt-Role, claim: realm.role }
        - { header: X-Jwt-Exp, claim: exp }
`))
	c := baseClaims()
	c["groups"] = []string{"g1", "g2"}
	c["realm"] = map[string]any{"role": "admin"}
	c["exp"] = 4685989700
	tok := mintIstio(t, c)
	other := mintIstio(t, baseClaims())
	tests := []struct {
		name    string
		prepare func(r *http.Request)
		reason  Reason
		anon    bool
		check   func(t *testing.T, r *http.Request)
	}{
		{name: "custom header with prefix", prepare: func(r *http.Request) { r.Header.Set("X-Jwt", "Token "+tok) }, check: func(t *testing.T, r *http.Request) {
			if r.Header.Get("X-Jwt") != "" {
				t.Error("token not stripped from X-Jwt")
			}
		}},
		{name: "bearer case-insensitive", prepare: func(r *http.Request) { r.Header.Set("Authorization", "bearer "+tok) }},
		{name: "query parameter", prepare: func(r *http.Request) { r.URL.RawQuery = "a=1&jwt=" + tok + "&b=2"; r.RequestURI = r.URL.RequestURI() }, check: func(t *testing.T, r *http.Request) {
			if r.URL.RawQuery != "a=1&b=2" || strings.Contains(r.RequestURI, tok) {
				t.Errorf("query %q, RequestURI %q: token not stripped", r.URL.RawQuery, r.RequestURI)
			}
		}},
		{name: "cookie", prepare: func(r *http.Request) { r.Header.Set("Cookie", "a=1; session="+tok+"; b=2") }, check: func(t *testing.T, r *http.Request) {
			if got := r.Header.Get("Cookie"); got != "a=1; b=2" {
				t.Errorf("Cookie %q", got)
			}
		}},
		{name: "same token twice", prepare: func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer "+tok)
			r.URL.RawQuery = "jwt=" + tok
		}},
		{name: "two different tokens", prepare: func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer "+tok)
			r.Header.Set("X-Jwt", "Token "+other)
		}, reason: ReasonMultiple},
		{name: "basic auth is no token", prepare: func(r *http.Request) { r.Header.Set("Authorization", "Basic YWxpY2U6cHc=") }, anon: true, check: func(t *testing.T, r *http.Request) {
			if r.Header.Get("Authorization") == "" {
				t.Error("Basic credentials removed")
			}
		}},
		{name: "spoofed claim header removed without token", prepare: func(r *http.Request) { r.Header.Set("X-Jwt-Sub", "admin") }, anon: true, check: func(t *testing.T, r *http.Request) {
			if r.Header.Get("X-Jwt-Sub") != "" {
				t.Error("client-supplied X-Jwt-Sub kept")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/details/0", nil)
			r.Header.Set("X-Jwt-Role", "spoofed")
			tc.prepare(r)
			id, err := a.Authenticate(r, "details")
			if got := ReasonOf(err); got != tc.reason {
				t.Fatalf("reason %v (%v), want %v", got, err, tc.reason)
			}
			if tc.reason != 0 {
				return
			}
			if tc.anon != (id == nil) {
				t.Fatalf("identity %+v, anonymous wanted: %v", id, tc.anon)
			}
			if !tc.anon {
				want := map[string]string{"X-Jwt-Sub": "alice", "X-Jwt-Groups": "g1,g2", "X-Jwt-Role": "admin", "X-Jwt-Exp": "4685989700"}
				for h, v := range want {
					if got := r.Header.Get(h); got != v {
						t.Errorf("%s = %q, want %q", h, got, v)
					}
				}
				if r.Header.Get("Authorization") != "" {
					t.Error("Authorization forwarded (forward_original_token is false)")
				}
				if g, ok := id.Claims["groups"].([]any); !ok || len(g) != 2 {
					t.Errorf("groups claim %#v", id.Claims["groups"])
				}
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestForwardAndRouteScope(t *testing.T) {
	a, _, _ := newAuth(t, `
routes:
  - { name: details, match: { path_prefix: /details }, direct_response: { status: 200 } }
  - { name: ratings, match: { path_prefix: /ratings }, direct_response: { status: 200 } }
authn:
  jwt:
    - issuer: testing@secure.istio.io
      jwks_file: `+sharedPath(t)+`
      forward_original_token: true
      routes: [details]
`)
	tok := sharedToken(t, "demo.jwt")
	r := httptest.NewRequest("GET", "/details", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	id, err := a.Authenticate(r, "details")
	if err != nil || id == nil {
		t.Fatalf("details: %v %v", id, err)
	}
	if r.Header.Get("Authorization") == "" {
		t.Error("token not forwarded")
	}
	r = httptest.NewRequest("GET", "/ratings", nil)
	r.Header.Set("Authorization", "Bearer garbage")
	if id, err := a.Authenticate(r, "ratings"); id != nil || err != nil {
		t.Errorf("ratings has no provider: got %v %v", id, err)
	}
}

func TestTokenCache(t *testing.T) {
	a, _, _ := newAuth(t, sharedJWKSYAML(t, ""))
	c := baseClaims()
	tok := mintIstio(t, c)
	for i := 0; i < 3; i++ {
		if _, err := a.Verify(tok, "details"); err != nil {
			t.Fatal(err)
		}
	}
	if hits := value(a.metrics.cache.WithLabelValues("hit")); hits != 2 {
		t.Errorf("cache hits %v, want 2", hits)
	}
	// Never past exp: move the clock beyond exp; the cached entry must not answer.
	a.now = func() time.Time { return time.Now().Add(3 * time.Hour) }
	if _, err := a.Verify(tok, "details"); ReasonOf(err) != ReasonExpired {
		t.Errorf("after exp: %v, want expired", err)
	}
	// Bounded.
	small := newTokenCache(32)
	for i := 0; i < 1000; i++ {
		k := tokenKey(string(rune(i)) + "x")
		small.put(&cacheEntry{key: k, until: time.Now().Add(time.Hour)})
	}
	if n := small.len(); n > 32 {
		t.Errorf("cache holds %d entries, bound 32", n)
	}
}

func sharedPath(t testing.TB) string { return sharedJWKSPath(t) }

func TestOffline(t *testing.T) {
	cfg := parseConfig(t, `
authn:
  jwt:
    - issuer: testing@secure.istio.io
      jwks_uri: https://idp.invalid/jwks.json
`)
	keys := NewKeyCache(Deps{})
	defer keys.Close()
	a, err := New(cfg, Deps{Keys: keys, Offline: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := keys.Ready(); err != nil {
		t.Errorf("offline compile registered a JWKS: %v", err)
	}
	if _, err := a.Verify(sharedToken(t, "demo.jwt"), "any"); ReasonOf(err) != ReasonNoKeys {
		t.Errorf("offline verify: %v", err)
	}
	// Bad inline keys fail the compile with the provider named.
	bad := parseConfig(t, "authn:\n  jwt:\n    - { name: corp, issuer: a, jwks: '{\"keys\":[]}' }\n")
	if _, err := New(bad, Deps{Offline: true}); err == nil || !strings.Contains(err.Error(), "jwt[0] (corp)") {
		t.Errorf("empty inline JWKS: %v", err)
	}
}

// flip changes one character in the middle of a base64url segment.
func flip(seg string) string {
	b := []byte(seg)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// TestMemoOnlyForCachedTokens: an identity kept in the verified-token
// cache carries a memo, and the same one for every request with the
// token; without the cache there is none (nothing would share it).
func TestMemoOnlyForCachedTokens(t *testing.T) {
	demo := sharedToken(t, "demo.jwt")
	for _, tc := range []struct {
		name  string
		cache string
		memo  bool
	}{
		{"cached", "", true},
		{"no cache", "  token_cache_size: -1\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _, _ := newAuth(t, `
routes:
  - { name: details, match: { path_prefix: /details }, direct_response: { status: 200 } }
authn:
`+tc.cache+`  jwt:
    - issuer: testing@secure.istio.io
      jwks_file: `+sharedJWKSPath(t)+"\n")
			first, err := a.Verify(demo, "details")
			if err != nil {
				t.Fatal(err)
			}
			second, err := a.Verify(demo, "details")
			if err != nil {
				t.Fatal(err)
			}
			if (first.Memo != nil) != tc.memo {
				t.Fatalf("memo = %v, want set: %v", first.Memo, tc.memo)
			}
			if tc.memo && first.Memo != second.Memo {
				t.Error("two requests with one cached token got different memos")
			}
		})
	}
}
