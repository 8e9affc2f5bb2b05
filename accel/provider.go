package accel

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
)

// Kind names a provider; String matches the config spelling.
type Kind int

// Provider kinds.
const (
	KindGo Kind = iota
	KindOpenSSL
	KindPKCS11
	KindAuto
)

func (k Kind) String() string {
	switch k {
	case KindGo:
		return "go"
	case KindOpenSSL:
		return "openssl"
	case KindPKCS11:
		return "pkcs11"
	case KindAuto:
		return "auto"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ParseKind parses the config spelling of a provider.
func ParseKind(s string) (Kind, error) {
	for _, k := range []Kind{KindGo, KindOpenSSL, KindPKCS11, KindAuto} {
		if k.String() == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("accel: provider %q is not known (use go, openssl, pkcs11 or auto)", s)
}

// Provider turns keys into provider-held keys that can sign.
type Provider interface {
	// Name is the provider's label in logs and metrics.
	Name() string
	// Import makes key usable by the provider. It is called once per
	// certificate, not per handshake. ErrUnsupportedKey says the engine
	// should serve this key with the go provider instead.
	Import(key crypto.Signer) (Key, error)
	// Close releases the provider. No Key is used after Close.
	Close() error
}

// Key is a private key held by a provider. Sign is safe for concurrent
// use and receives the digest crypto/tls computed.
type Key interface {
	Public() crypto.PublicKey
	Sign(digest []byte, opts crypto.SignerOpts) ([]byte, error)
}

// Op is one signature request inside a batch.
type Op struct {
	Key    Key
	Digest []byte
	Opts   crypto.SignerOpts
	Sig    []byte // set by the provider
	Err    error  // set by the provider
}

// BatchProvider is implemented by providers that sign several requests
// in one call (a multi-buffer library signs 8 RSA operations at once).
// Providers without it get their batch's keys signed one at a time.
type BatchProvider interface {
	SignBatch(ops []*Op)
}

// ErrUnsupportedKey is returned by Import for keys a provider cannot
// hold (e.g. Ed25519 in openssl); the engine serves them with go.
var ErrUnsupportedKey = errors.New("key type not supported by this provider")

// goProvider signs with the standard library: the baseline, always
// available.
type goProvider struct{}

func (goProvider) Name() string   { return KindGo.String() }
func (goProvider) Close() error   { return nil }
func (goProvider) cpuBound() bool { return true }

func (goProvider) Import(key crypto.Signer) (Key, error) {
	if key == nil {
		return nil, errors.New("accel: no private key")
	}
	return goKey{key}, nil
}

type goKey struct{ s crypto.Signer }

func (k goKey) Public() crypto.PublicKey { return k.s.Public() }
func (k goKey) Sign(digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.s.Sign(rand.Reader, digest, opts)
}

// KeyType labels a public key for metrics: rsa2048, rsa3072, ecdsa_p256 …
func KeyType(pub crypto.PublicKey) string {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa%d", p.N.BitLen())
	case *ecdsa.PublicKey:
		switch p.Curve {
		case elliptic.P256():
			return "ecdsa_p256"
		case elliptic.P384():
			return "ecdsa_p384"
		case elliptic.P521():
			return "ecdsa_p521"
		}
		return "ecdsa"
	case ed25519.PublicKey:
		return "ed25519"
	}
	return "unknown"
}
