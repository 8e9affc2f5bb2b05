package jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// pubKey is one public verification key of a JWKS.
type pubKey struct {
	kid string
	alg string // the JWK's alg, if it names one
	kty jwa.KeyType
	crv elliptic.Curve // for EC keys
	key jwk.Key
}

// keySet is a parsed JWKS, immutable once built.
type keySet struct {
	byKID map[string][]*pubKey
	all   []*pubKey
}

// maxKeys bounds the keys kept from one JWKS.
const maxKeys = 100

// minRSABits refuses weak RSA keys in a JWKS.
const minRSABits = 2048

// parseJWKS parses a JWKS document and keeps its public signature keys.
// A document with no usable key is an error, so a broken IdP response
// never replaces good keys.
func parseJWKS(data []byte) (*keySet, error) {
	set, err := jwk.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("not a valid JWKS: %w", err)
	}
	ks := &keySet{byKID: map[string][]*pubKey{}}
	var skipped []error
	for i := 0; i < set.Len() && len(ks.all) < maxKeys; i++ {
		k, _ := set.Key(i)
		if u := k.KeyUsage(); u != "" && u != string(jwk.ForSignature) {
			continue
		}
		pk, err := jwk.PublicKeyOf(k)
		if err != nil {
			skipped = append(skipped, fmt.Errorf("key %d: %w", i, err))
			continue
		}
		p := &pubKey{kid: pk.KeyID(), kty: pk.KeyType(), key: pk}
		if a := pk.Algorithm(); a != nil {
			p.alg = a.String()
		}
		switch p.kty {
		case jwa.RSA:
			var raw rsa.PublicKey
			if err := pk.Raw(&raw); err != nil {
				skipped = append(skipped, fmt.Errorf("key %d: %w", i, err))
				continue
			}
			if raw.N == nil || raw.N.BitLen() < minRSABits || raw.E < 3 {
				skipped = append(skipped, fmt.Errorf("key %d (kid %q): RSA keys need at least %d bits", i, p.kid, minRSABits))
				continue
			}
		case jwa.OKP:
		case jwa.EC:
			var raw ecdsa.PublicKey
			if err := pk.Raw(&raw); err != nil {
				skipped = append(skipped, fmt.Errorf("key %d: %w", i, err))
				continue
			}
			p.crv = raw.Curve
		default:
			continue // oct (HMAC) keys are never used
		}
		ks.all = append(ks.all, p)
		ks.byKID[p.kid] = append(ks.byKID[p.kid], p)
	}
	if len(ks.all) == 0 {
		if len(skipped) > 0 {
			return nil, fmt.Errorf("no usable signature key: %w", errors.Join(skipped...))
		}
		return nil, errors.New("no usable signature key (RSA, EC or OKP with use sig)")
	}
	return ks, nil
}

// candidates returns the keys that may have signed a token with this kid
// and alg: by kid when the token names one, else every key of the right type.
func (ks *keySet) candidates(kid, alg string) []*pubKey {
	list := ks.all
	if kid != "" {
		list = ks.byKID[kid]
	}
	var out []*pubKey
	for _, k := range list {
		if k.fits(alg) {
			out = append(out, k)
		}
	}
	return out
}

// fits reports whether the key can verify alg: right key type, right
// curve, and the JWK's own alg if it names one.
func (k *pubKey) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return k.kty == jwa.RSA
	case "ES256":
		return k.kty == jwa.EC && k.crv == elliptic.P256()
	case "ES384":
		return k.kty == jwa.EC && k.crv == elliptic.P384()
	case "ES512":
		return k.kty == jwa.EC && k.crv == elliptic.P521()
	case "EdDSA":
		return k.kty == jwa.OKP
	}
	return false
}

// keySource gives a provider its current keys.
type keySource interface {
	// current returns the keys, or an error saying why there are none.
	current() (*keySet, error)
	// refetch asks for fresh keys after an unknown kid. It reports false
	// when the refetch was rate-limited (or the source is static).
	refetch(ctx context.Context) (*keySet, bool)
}

type staticKeys struct{ ks *keySet }

func (s staticKeys) current() (*keySet, error)               { return s.ks, nil }
func (s staticKeys) refetch(context.Context) (*keySet, bool) { return s.ks, false }

// offlineKeys stands for a remote JWKS when compiling offline.
type offlineKeys string

func (o offlineKeys) current() (*keySet, error) {
	return nil, fmt.Errorf("jwks %s: not fetched (compiled offline)", string(o))
}
func (o offlineKeys) refetch(context.Context) (*keySet, bool) { return nil, false }
