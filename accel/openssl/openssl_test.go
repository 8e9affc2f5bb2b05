//go:build cgo && linux

package openssl

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func open(tb testing.TB) *Provider {
	tb.Helper()
	p, err := Open(Options{})
	if err != nil {
		tb.Skipf("libcrypto 3 not loadable here: %v", err)
	}
	return p
}

// TestContextsReused signs many times, from several goroutines, with
// each parameter set crypto/tls uses, through contexts kept per key:
// every signature verifies, the idle contexts stay bounded, and a
// signature OpenSSL refuses does not spoil the ones after it.
func TestContextsReused(t *testing.T) {
	p := open(t)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rkey, err := p.Import(rk)
	if err != nil {
		t.Fatal(err)
	}
	ekey, err := p.Import(ek)
	if err != nil {
		t.Fatal(err)
	}
	pss := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	pssAuto := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA384}
	sign := func(i int) error {
		msg := []byte(fmt.Sprintf("message %d", i))
		d256 := sha256.Sum256(msg)
		d384 := sha512.Sum384(msg)
		switch i % 4 {
		case 0:
			sig, err := rkey.Sign(d256[:], pss)
			if err != nil {
				return err
			}
			return rsa.VerifyPSS(&rk.PublicKey, crypto.SHA256, d256[:], sig, pss)
		case 1:
			sig, err := rkey.Sign(d256[:], crypto.SHA256)
			if err != nil {
				return err
			}
			return rsa.VerifyPKCS1v15(&rk.PublicKey, crypto.SHA256, d256[:], sig)
		case 2:
			sig, err := rkey.Sign(d384[:], pssAuto)
			if err != nil {
				return err
			}
			return rsa.VerifyPSS(&rk.PublicKey, crypto.SHA384, d384[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		default:
			sig, err := ekey.Sign(d256[:], crypto.SHA256)
			if err != nil {
				return err
			}
			if !ecdsa.VerifyASN1(&ek.PublicKey, d256[:], sig) {
				return fmt.Errorf("ECDSA signature %d does not verify", i)
			}
			return nil
		}
	}
	const goroutines, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := sign(g*each + i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// 2 parameter sets for the RSA key (PSS/SHA-256, PKCS#1/SHA-256 and
	// PSS/SHA-384 is 3), each with at most max idle contexts.
	st := rkey.st
	st.mu.Lock()
	idle, limit := len(st.idle), 3*st.max
	st.mu.Unlock()
	if idle == 0 || idle > limit {
		t.Errorf("RSA key keeps %d idle contexts, want 1..%d", idle, limit)
	}

	// A salt longer than the key allows: OpenSSL refuses, the context is
	// dropped, and the next signature with the same parameters works.
	d := sha512.Sum512([]byte("x"))
	long := &rsa.PSSOptions{SaltLength: 250, Hash: crypto.SHA512}
	if _, err := rkey.Sign(d[:], long); err == nil || !strings.Contains(err.Error(), "openssl: sign:") {
		t.Fatalf("salt of 250 bytes with RSA-2048: err = %v, want an OpenSSL refusal", err)
	} else {
		t.Logf("refused as expected: %v", err)
	}
	if err := sign(0); err != nil {
		t.Fatalf("after a refused signature: %v", err)
	}
}

// BenchmarkSign is one signature at a time on one goroutine, as a worker
// of the accel engine makes them: the provider call, with the per-key
// signing context reused across calls.
//
//	taskset -c 1 go test -run XXX -bench . -cpu 1 ./accel/openssl/
func BenchmarkSign(b *testing.B) {
	p := open(b)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("bench"))
	for _, c := range []struct {
		name string
		key  crypto.Signer
		opts crypto.SignerOpts
	}{
		{"rsa2048_pss", rk, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}},
		{"rsa2048_pkcs1", rk, crypto.SHA256},
		{"ecdsa_p256", ek, crypto.SHA256},
	} {
		b.Run(c.name, func(b *testing.B) {
			k, err := p.Import(c.key)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := k.Sign(digest[:], c.opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
