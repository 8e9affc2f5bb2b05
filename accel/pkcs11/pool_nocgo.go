//go:build !cgo

package pkcs11

import (
	"crypto"
	"errors"
)

// Defaults fill what a URI leaves out (from accel.pkcs11 in the config).
type Defaults struct {
	Module     string
	TokenLabel string
	PinFile    string
}

// Pool is not available without cgo: PKCS#11 modules are C libraries.
type Pool struct{}

var errNoCgo = errors.New("pkcs11: this ztgate was built without cgo (CGO_ENABLED=0); rebuild with cgo to use PKCS#11 modules")

// Open fails: this binary was built without cgo.
func (p *Pool) Open(module, token, serial string, slot *int, pin string) (any, error) {
	return nil, errNoCgo
}

// Signer fails: this binary was built without cgo.
func (p *Pool) Signer(*URI, Defaults) (crypto.Signer, error) { return nil, errNoCgo }

// Close does nothing.
func (p *Pool) Close() error { return nil }
