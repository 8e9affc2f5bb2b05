package accel

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/cpu"

	"github.com/ztgate/ztgate/accel/openssl"
	"github.com/ztgate/ztgate/accel/pkcs11"
	"github.com/ztgate/ztgate/configs"
)

// opensslProvider adapts accel/openssl to Provider.
type opensslProvider struct {
	p *openssl.Provider
	// builtin: no OpenSSL provider or config of the operator's, so
	// signatures are libcrypto's own computation on this CPU.
	builtin bool
}

func openOpenSSL(c configs.AccelOpenSSL) (*opensslProvider, error) {
	p, err := openssl.Open(openssl.Options{Library: c.Library, Provider: c.Provider, Config: c.Config, Properties: c.Properties})
	if err != nil {
		return nil, err
	}
	return &opensslProvider{p: p, builtin: c.Provider == "" && c.Config == "" && c.Properties == ""}, nil
}

func (o *opensslProvider) cpuBound() bool { return o.builtin }

func (o *opensslProvider) Name() string { return KindOpenSSL.String() }
func (o *opensslProvider) Close() error { return nil } // libcrypto stays loaded for the process

func (o *opensslProvider) Import(key crypto.Signer) (Key, error) {
	k, err := o.p.Import(key)
	if errors.Is(err, openssl.ErrUnsupportedKey) {
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedKey, KeyType(key.Public()))
	}
	if err != nil {
		return nil, err
	}
	return k, nil
}

// pkcs11Provider is the provider chosen with provider: pkcs11. Its keys
// come from LoadKey; in-memory keys are not imported into the token
// (crypto11 has no private-key import), so Wrap serves them with go.
type pkcs11Provider struct{}

func (pkcs11Provider) Name() string { return KindPKCS11.String() }
func (pkcs11Provider) Close() error { return nil }
func (pkcs11Provider) Import(crypto.Signer) (Key, error) {
	return nil, fmt.Errorf("%w: in-memory key (keep it in the token and name it with a pkcs11: URI)", ErrUnsupportedKey)
}

// hsmPool opens PKCS#11 contexts lazily: a pkcs11: key path works with
// any provider setting.
type hsmPool struct {
	cfg  configs.AccelPKCS11
	pool pkcs11.Pool
}

// check opens the configured token, so that provider: pkcs11 with a
// missing module or token is reported at startup.
func (h *hsmPool) check() error {
	pin := ""
	if h.cfg.PinFile != "" {
		var err error
		if pin, err = pkcs11PIN(h.cfg.PinFile); err != nil {
			return err
		}
	}
	_, err := h.pool.Open(h.cfg.Module, h.cfg.TokenLabel, "", nil, pin)
	return err
}

func pkcs11PIN(file string) (string, error) {
	b, err := readFileLimited(file, 4096)
	if err != nil {
		return "", fmt.Errorf("pkcs11: PIN file %s: %w", file, err)
	}
	pin, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimRight(pin, "\r"), nil
}

func (h *hsmPool) close() error { return h.pool.Close() }

// hsmKey is a key inside a token, signed through crypto11.
type hsmKey struct{ s crypto.Signer }

func (k hsmKey) Public() crypto.PublicKey { return k.s.Public() }
func (k hsmKey) Sign(digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.s.Sign(rand.Reader, digest, opts)
}

// LoadKey returns a signer for an RFC 7512 "pkcs11:" URI (a listener key
// path). The key stays in the token; signatures go through the engine's
// queue, counted under provider="pkcs11". accel.pkcs11 supplies the
// module, token and PIN file when the URI does not.
func (e *Engine) LoadKey(uri string) (crypto.Signer, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	u, err := pkcs11.ParseURI(uri)
	if err != nil {
		return nil, fmt.Errorf("accel: %w", err)
	}
	s, err := e.hsm.pool.Signer(u, pkcs11.Defaults{Module: e.cfg.PKCS11.Module, TokenLabel: e.cfg.PKCS11.TokenLabel, PinFile: e.cfg.PKCS11.PinFile})
	if err != nil {
		return nil, fmt.Errorf("accel: %w", err)
	}
	return e.newSigner(pkcs11Provider{}, hsmKey{s}), nil
}

// CPUFeatures lists the CPU features that matter for signing speed, as
// logged at startup (e.g. "avx512ifma,avx512f,avx2,adx,bmi2").
func CPUFeatures() string {
	var f []string
	add := func(ok bool, name string) {
		if ok {
			f = append(f, name)
		}
	}
	switch runtime.GOARCH {
	case "amd64":
		add(cpu.X86.HasAVX512IFMA, "avx512ifma")
		add(cpu.X86.HasAVX512F, "avx512f")
		add(cpu.X86.HasAVX2, "avx2")
		add(cpu.X86.HasADX, "adx")
		add(cpu.X86.HasBMI2, "bmi2")
		add(cpu.X86.HasAES, "aes")
	case "arm64":
		add(cpu.ARM64.HasAES, "aes")
		add(cpu.ARM64.HasSHA2, "sha2")
		add(cpu.ARM64.HasSHA512, "sha512")
		add(cpu.ARM64.HasSVE, "sve")
	}
	if len(f) == 0 {
		return "none"
	}
	return strings.Join(f, ",")
}

//go:embed selftest_rsa2048.pem
var selftestPEM []byte

var selftestKey = sync.OnceValues(func() (*rsa.PrivateKey, error) {
	b, _ := pem.Decode(selftestPEM)
	if b == nil {
		return nil, errors.New("self-test key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("self-test key is not RSA")
	}
	return rk, nil
})

// selfTestRounds signatures per candidate: enough to rank a 3× gap, few
// enough to keep startup well under 100 ms.
const selfTestRounds = 24

// SelfTest signs with an RSA-2048 key through p, checks every signature
// with Go's verifier (PKCS#1 v1.5 and PSS), and returns the time per
// signature.
func SelfTest(p Provider) (time.Duration, error) {
	key, err := selftestKey()
	if err != nil {
		return 0, err
	}
	k, err := p.Import(key)
	if err != nil {
		return 0, err
	}
	digest := sha256.Sum256([]byte("ztgate accel self-test"))
	// One untimed signature warms caches (and OpenSSL's blinding).
	if _, err := k.Sign(digest[:], crypto.SHA256); err != nil {
		return 0, err
	}
	start := time.Now()
	for i := range selfTestRounds {
		var opts crypto.SignerOpts = crypto.SHA256
		if i%2 == 1 {
			opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
		}
		sig, err := k.Sign(digest[:], opts)
		if err != nil {
			return 0, err
		}
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			err = rsa.VerifyPSS(&key.PublicKey, crypto.SHA256, digest[:], sig, pss)
		} else {
			err = rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, digest[:], sig)
		}
		if err != nil {
			return 0, fmt.Errorf("self-test signature does not verify: %w", err)
		}
	}
	return time.Since(start) / selfTestRounds, nil
}

// auto picks the fastest provider that passes the self-test. pkcs11 is
// never picked: an HSM holds its own keys and is chosen explicitly.
func (e *Engine) auto(cfg configs.Accel) (Provider, error) {
	type cand struct {
		p   Provider
		per time.Duration
	}
	var cands []cand
	var reasons []string
	try := func(p Provider) {
		per, err := SelfTest(p)
		if err != nil {
			reasons = append(reasons, p.Name()+": "+err.Error())
			e.log.Warn("accel self-test failed", LogProvider, p.Name(), LogReason, err.Error())
			return
		}
		e.log.Info("accel self-test", LogProvider, p.Name(), LogSelfTest, per.String())
		cands = append(cands, cand{p, per})
	}
	if op, err := openOpenSSL(cfg.OpenSSL); err == nil {
		try(op)
	} else {
		reasons = append(reasons, "openssl: "+err.Error())
		e.log.Info("accel provider not available", LogProvider, "openssl", LogReason, err.Error())
	}
	try(e.gop)
	if len(cands) == 0 {
		return nil, fmt.Errorf("accel: auto: no provider passed the self-test: %s", strings.Join(reasons, "; "))
	}
	best := cands[0]
	for _, c := range cands[1:] {
		if c.per < best.per {
			best = c
		}
	}
	return best.p, nil
}

func readFileLimited(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}
