//go:build !cgo || !linux

// Package openssl signs with OpenSSL 3's libcrypto loaded at run time.
// This build has no cgo (or is not Linux), so Open always fails and the
// engine falls back to go (or refuses to start with required: true).
package openssl

import (
	"crypto"
	"errors"
)

// Options say which libcrypto and which OpenSSL provider to use.
type Options struct {
	Library    string
	Provider   string
	Config     string
	Properties string
}

// ErrUnsupportedKey is returned by Import for key types not supported.
var ErrUnsupportedKey = errors.New("openssl: only RSA and ECDSA keys are supported")

// Provider is not available in this build.
type Provider struct{}

// Key is not available in this build.
type Key struct{}

// Open fails: this binary was built without cgo.
func Open(Options) (*Provider, error) {
	return nil, errors.New("openssl: this ztgate was built without cgo (CGO_ENABLED=0); rebuild with cgo to use libcrypto")
}

func (p *Provider) Version() string { return "" }
func (p *Provider) Library() string { return "" }
func (p *Provider) Import(crypto.Signer) (*Key, error) {
	return nil, ErrUnsupportedKey
}
func (k *Key) Public() crypto.PublicKey { return nil }
func (k *Key) Sign([]byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("openssl: not available in this build")
}
