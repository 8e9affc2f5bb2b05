package jwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// TestEveryAlgorithm verifies each allowed algorithm with a key of the
// right type, from an inline JWKS, and selects providers by iss.
func TestEveryAlgorithm(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey := istioKey(t)
	set := jwk.NewSet()
	add := func(kid string, pub any) {
		k, err := jwk.FromRaw(pub)
		if err != nil {
			t.Fatal(err)
		}
		_ = k.Set(jwk.KeyIDKey, kid)
		_ = set.AddKey(k)
	}
	add("rsa", &rsaKey.PublicKey)
	add("p256", &p256.PublicKey)
	add("p384", &p384.PublicKey)
	add("p521", &p521.PublicKey)
	add("ed", ed.Public())
	data, _ := jsonMarshal(set)
	a, _, _ := newAuth(t, `
routes:
  - { name: details, match: { path_prefix: /details }, direct_response: { status: 200 } }
authn:
  jwt:
    - issuer: second.example
      jwks: '`+data+`'
    - issuer: testing@secure.istio.io
      jwks_file: `+sharedJWKSPath(t)+`
`)
	iss2 := func() map[string]any { c := baseClaims(); c["iss"] = "second.example"; return c }
	tests := []struct {
		alg    jwa.SignatureAlgorithm
		kid    string
		key    crypto.Signer
		reason Reason
	}{
		{jwa.RS256, "rsa", rsaKey, 0}, {jwa.RS384, "rsa", rsaKey, 0}, {jwa.RS512, "rsa", rsaKey, 0},
		{jwa.PS256, "rsa", rsaKey, 0}, {jwa.PS384, "rsa", rsaKey, 0}, {jwa.PS512, "rsa", rsaKey, 0},
		{jwa.ES256, "p256", p256, 0}, {jwa.ES384, "p384", p384, 0}, {jwa.ES512, "p521", p521, 0},
		{jwa.EdDSA, "ed", ed, 0},
		{jwa.ES256, "p384", p256, ReasonUnknownKey}, // kid names a key of the wrong curve
		{jwa.RS256, "p256", rsaKey, ReasonUnknownKey},
		{jwa.ES256, "", p256, 0}, // no kid: every key of the right type is tried
	}
	for _, tc := range tests {
		t.Run(tc.alg.String()+"/"+tc.kid, func(t *testing.T) {
			id, err := a.Verify(mint(t, tc.alg, tc.key, tc.kid, iss2()), "details")
			if ReasonOf(err) != tc.reason {
				t.Fatalf("err %v, want %v", err, tc.reason)
			}
			if tc.reason == 0 && (id.Provider != "second.example" || id.RequestPrincipal != "second.example/alice") {
				t.Errorf("identity %+v", id)
			}
		})
	}
	// The istio token goes to the istio provider; an unknown iss matches none.
	if id, err := a.Verify(sharedToken(t, "demo.jwt"), "details"); err != nil || id.Provider != istioIssuer {
		t.Errorf("demo.jwt: %v %v", id, err)
	}
	c := baseClaims()
	c["iss"] = "third.example"
	if _, err := a.Verify(mintIstio(t, c), "details"); ReasonOf(err) != ReasonUnknownIssuer {
		t.Errorf("unknown iss: %v", err)
	}
}
