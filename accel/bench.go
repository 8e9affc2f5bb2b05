package accel

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/ztgate/ztgate/accel/internal/loadgen"
	"github.com/ztgate/ztgate/configs"
)

// BenchOptions say what `ztgate accel bench` measures.
type BenchOptions struct {
	// Providers to measure (default: go and openssl; one that cannot be
	// loaded is reported in the table, not an error).
	Providers []string
	// KeyTypes among rsa2048, rsa3072, rsa4096, ecdsa_p256, ecdsa_p384
	// (default rsa2048, rsa3072, ecdsa_p256).
	KeyTypes []string
	// SignDuration is the time per sign cell (default 1s).
	SignDuration time.Duration
	// HandshakeDuration is the time per handshake cell (default 2s); a
	// negative value skips the handshake table.
	HandshakeDuration time.Duration
	// Concurrency is the number of handshake clients (default 4 per core).
	Concurrency int
	// NoResumption skips the session-ticket row (resumed handshakes/s).
	NoResumption bool
	// OpenSSL configures the openssl provider (library, provider, ...).
	OpenSSL configs.AccelOpenSSL
	// PKCS11 configures the pkcs11 provider; PKCS11Key is the pkcs11:
	// URI of the HSM key it measures (an HSM key cannot be generated
	// here, so KeyTypes do not apply to it).
	PKCS11    configs.AccelPKCS11
	PKCS11Key string
}

func (o *BenchOptions) defaults() {
	if len(o.Providers) == 0 {
		o.Providers = []string{"go", "openssl"}
	}
	if len(o.KeyTypes) == 0 {
		o.KeyTypes = []string{"rsa2048", "rsa3072", "ecdsa_p256"}
	}
	if o.SignDuration <= 0 {
		o.SignDuration = time.Second
	}
	if o.HandshakeDuration == 0 {
		o.HandshakeDuration = 2 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4 * runtime.GOMAXPROCS(0)
	}
}

// GenerateKey makes a key of a bench key type (rsa2048, ecdsa_p256, ...).
func GenerateKey(keyType string) (crypto.Signer, error) {
	switch keyType {
	case "rsa2048":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "rsa3072":
		return rsa.GenerateKey(rand.Reader, 3072)
	case "rsa4096":
		return rsa.GenerateKey(rand.Reader, 4096)
	case "ecdsa_p256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ecdsa_p384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	return nil, fmt.Errorf("accel: key type %q is not known (use rsa2048, rsa3072, rsa4096, ecdsa_p256 or ecdsa_p384)", keyType)
}

// SelfSignedCert makes a one-day certificate for bench.test, localhost
// and 127.0.0.1 with key, signed by key.
func SelfSignedCert(key crypto.Signer) (*tls.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "bench.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		DNSNames:              []string{"bench.test", "localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// Bench measures this host: signatures per second per provider and key
// type (one goroutine, and all cores through the engine), then full TLS
// 1.3 handshakes per second through a loopback listener (client in the
// same process, so the rate includes the client's cost). It prints two
// tables to w.
func Bench(ctx context.Context, w io.Writer, opts BenchOptions) error {
	opts.defaults()
	keys := map[string]crypto.Signer{}
	for _, kt := range opts.KeyTypes {
		k, err := GenerateKey(kt)
		if err != nil {
			return err
		}
		keys[kt] = k
	}
	fmt.Fprintf(w, "accel bench: %s/%s, %d cores (GOMAXPROCS), CPU features %s\n\n", runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), CPUFeatures())

	// providerKeys holds the keys a provider is measured with: the
	// generated ones, or for pkcs11 the HSM key.
	providerKeys := map[string]benchKeys{}
	keysOf := func(p string) benchKeys {
		if k, ok := providerKeys[p]; ok {
			return k
		}
		return benchKeys{names: opts.KeyTypes, keys: keys}
	}
	engines := map[string]*Engine{}
	defer func() {
		for _, e := range engines {
			e.Close()
		}
	}()
	var notes []string
	defer func() {
		for _, n := range notes {
			fmt.Fprintln(w, "note:", n)
		}
	}()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "provider\tkey\tsign/s 1 goroutine\tµs/sign\tsign/s all cores (engine)\t")
	for _, p := range opts.Providers {
		e, err := New(configs.Accel{Provider: p, Required: true, OpenSSL: opts.OpenSSL, PKCS11: opts.PKCS11}, Deps{})
		if err == nil && p == KindPKCS11.String() {
			err = benchHSMKey(e, opts.PKCS11Key, providerKeys)
		}
		if err != nil {
			fmt.Fprintf(tw, "%s\t-\tunavailable\t\t\t\n", p)
			notes = append(notes, fmt.Sprintf("%s: %v", p, err))
			if e != nil {
				e.Close()
			}
			continue
		}
		engines[p] = e
		pk := keysOf(p)
		for _, kt := range pk.names {
			if ctx.Err() != nil {
				tw.Flush()
				return ctx.Err()
			}
			one, all, err := benchSign(ctx, e, pk.keys[kt], opts.SignDuration)
			if err != nil {
				fmt.Fprintf(tw, "%s\t%s\terror: %v\t\t\t\n", p, kt, err)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.1f\t%.0f\t\n", p, kt, one, 1e6/one, all)
		}
	}
	tw.Flush()
	if opts.HandshakeDuration < 0 {
		return nil
	}
	fmt.Fprintf(w, "\nfull TLS 1.3 handshakes (X25519, no resumption, one GET), loopback, %d clients in this process:\n\n", opts.Concurrency)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "provider\tkey\thandshakes/s\tfailures\t")
	for _, p := range opts.Providers {
		e, ok := engines[p]
		if !ok {
			continue
		}
		pk := keysOf(p)
		for _, kt := range pk.names {
			if ctx.Err() != nil {
				tw.Flush()
				return ctx.Err()
			}
			r, err := benchHandshakes(ctx, e, pk.keys[kt], opts.Concurrency, opts.HandshakeDuration, false)
			if err != nil {
				fmt.Fprintf(tw, "%s\t%s\terror: %v\t\t\n", p, kt, err)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%d\t\n", p, kt, r.Rate(), r.Failures)
			if r.FirstError != nil {
				notes = append(notes, fmt.Sprintf("%s %s: first handshake failure: %v", p, kt, r.FirstError))
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if opts.NoResumption || len(engines) == 0 || ctx.Err() != nil {
		return nil
	}
	// Resumed handshakes need no signature, so one provider stands for all.
	kt := opts.KeyTypes[0]
	for _, p := range opts.Providers {
		e, ok := engines[p]
		if !ok {
			continue
		}
		r, err := benchHandshakes(ctx, e, keys[kt], opts.Concurrency, opts.HandshakeDuration, true)
		if err != nil {
			return err
		}
		rate := 0.0
		if r.Handshakes > 0 {
			rate = 100 * float64(r.Resumed) / float64(r.Handshakes)
		}
		fmt.Fprintf(w, "\nwith session tickets (%s, %s): %.0f handshakes/s, %.1f%% resumed\n", p, kt, r.Rate(), rate)
		break
	}
	return nil
}

// benchSign returns signatures/s from one goroutine calling the
// provider's key directly, and from one goroutine per core through the
// engine (queue and workers included).
func benchSign(ctx context.Context, e *Engine, key crypto.Signer, d time.Duration) (one, all float64, err error) {
	cert, err := SelfSignedCert(key)
	if err != nil {
		return 0, 0, err
	}
	wc, err := e.Wrap(cert)
	if err != nil {
		return 0, 0, err
	}
	s := wc.PrivateKey.(*signer)
	if s.prov != e.prov {
		return 0, 0, fmt.Errorf("%s cannot hold this key", e.prov.Name())
	}
	digest := sha256.Sum256([]byte("ztgate accel bench"))
	var opts crypto.SignerOpts = crypto.SHA256
	if _, ok := s.pub.(*rsa.PublicKey); ok {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256} // what TLS 1.3 asks
	}
	if _, err := s.key.Sign(digest[:], opts); err != nil {
		return 0, 0, err
	}
	n, start := 0, time.Now()
	for time.Since(start) < d && ctx.Err() == nil {
		if _, err := s.key.Sign(digest[:], opts); err != nil {
			return 0, 0, err
		}
		n++
	}
	one = float64(n) / time.Since(start).Seconds()

	var total atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start = time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < d && ctx.Err() == nil {
				if _, err := s.Sign(nil, digest[:], opts); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				total.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, 0, err
	}
	return one, float64(total.Load()) / time.Since(start).Seconds(), nil
}

func benchHandshakes(ctx context.Context, e *Engine, key crypto.Signer, conc int, d time.Duration, resume bool) (loadgen.Result, error) {
	cert, err := SelfSignedCert(key)
	if err != nil {
		return loadgen.Result{}, err
	}
	wc, err := e.Wrap(cert)
	if err != nil {
		return loadgen.Result{}, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return loadgen.Result{}, err
	}
	scfg := &tls.Config{Certificates: []tls.Certificate{*wc}, MinVersion: tls.VersionTLS13, SessionTicketsDisabled: !resume}
	if resume {
		tk, err := NewTickets(configs.AccelSessions{Rotation: time.Hour}, Deps{})
		if err != nil {
			return loadgen.Result{}, err
		}
		defer tk.Close()
		tk.Register(scfg)
	}
	srv := loadgen.Serve(ln, scfg)
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	ccfg := &tls.Config{
		RootCAs: roots, ServerName: "bench.test", MinVersion: tls.VersionTLS13,
		CurvePreferences: []tls.CurveID{tls.X25519},
	}
	if resume {
		ccfg.ClientSessionCache = tls.NewLRUClientSessionCache(conc)
	}
	return loadgen.Run(ctx, ln.Addr().String(), ccfg, conc, d), nil
}

type benchKeys struct {
	names []string
	keys  map[string]crypto.Signer
}

// benchHSMKey loads the HSM key to measure with the pkcs11 provider.
func benchHSMKey(e *Engine, uri string, into map[string]benchKeys) error {
	if uri == "" {
		return fmt.Errorf("name the HSM key to measure with a pkcs11: URI")
	}
	s, err := e.LoadKey(uri)
	if err != nil {
		return err
	}
	kt := KeyType(s.Public())
	into[KindPKCS11.String()] = benchKeys{names: []string{kt}, keys: map[string]crypto.Signer{kt: s}}
	return nil
}
