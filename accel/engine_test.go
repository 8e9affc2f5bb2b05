package accel

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ztgate/ztgate/accel/openssl"
	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/e2e/testenv"
)

// Test keys are made once per test binary: RSA generation is slow.
var testKeys = sync.OnceValue(func() map[string]crypto.Signer {
	m := map[string]crypto.Signer{}
	for name, bits := range map[string]int{"rsa2048": 2048, "rsa3072": 3072} {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			panic(err)
		}
		m[name] = k
	}
	for name, c := range map[string]elliptic.Curve{"ecdsa_p256": elliptic.P256(), "ecdsa_p384": elliptic.P384()} {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			panic(err)
		}
		m[name] = k
	}
	return m
})

// selfSigned makes a certificate for key, valid for 127.0.0.1 and
// localhost, signed by key itself.
func selfSigned(t testing.TB, key crypto.Signer) *tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(mrand.Int64N(1 << 62)),
		Subject:               pkix.Name{CommonName: "accel test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{{127, 0, 0, 1}},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// providers returns the configs of every provider available here; a
// missing libcrypto skips (or fails under make test) the openssl one.
func providers(t *testing.T) map[string]configs.Accel {
	t.Helper()
	out := map[string]configs.Accel{"go": {Provider: "go"}}
	if _, err := openssl.Open(openssl.Options{}); err != nil {
		t.Logf("openssl provider not tested: %v", err)
		if testenvRequire() {
			t.Fatalf("libcrypto.so.3 is needed under make test: %v", err)
		}
	} else {
		out["openssl"] = configs.Accel{Provider: "openssl", Required: true}
	}
	return out
}

func testenvRequire() bool { return os.Getenv(testenv.RequireEnv) != "" }

func newEngine(t testing.TB, cfg configs.Accel, reg prometheus.Registerer) *Engine {
	t.Helper()
	e, err := New(cfg, Deps{Logger: slog.New(slog.DiscardHandler), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// TestSignVerifies is the property test: for every provider, key type
// and signature scheme crypto/tls uses, signatures of random messages
// made through the engine verify with Go's verifier.
func TestSignVerifies(t *testing.T) {
	type scheme struct {
		name string
		opts crypto.SignerOpts
	}
	rsaSchemes := []scheme{
		{"pkcs1v15_sha256", crypto.SHA256},
		{"pkcs1v15_sha384", crypto.SHA384},
		{"pkcs1v15_sha512", crypto.SHA512},
		{"pkcs1v15_sha1", crypto.SHA1},
		{"pss_sha256", &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}},
		{"pss_sha384", &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA384}},
		{"pss_sha512", &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA512}},
		{"pss_auto", &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}},
		{"pss_salt20", &rsa.PSSOptions{SaltLength: 20, Hash: crypto.SHA256}},
	}
	ecSchemes := []scheme{{"sha256", crypto.SHA256}, {"sha384", crypto.SHA384}, {"sha512", crypto.SHA512}}
	const rounds = 12
	for pname, cfg := range providers(t) {
		e := newEngine(t, cfg, prometheus.NewRegistry())
		for kname, key := range testKeys() {
			cert, err := e.Wrap(selfSigned(t, key))
			if err != nil {
				t.Fatal(err)
			}
			s := cert.PrivateKey.(*signer)
			if s.prov.Name() != pname {
				t.Fatalf("%s key served by %s, want %s", kname, s.prov.Name(), pname)
			}
			schemes := ecSchemes
			if strings.HasPrefix(kname, "rsa") {
				schemes = rsaSchemes
			}
			for _, sc := range schemes {
				t.Run(pname+"/"+kname+"/"+sc.name, func(t *testing.T) {
					for range rounds {
						msg := make([]byte, mrand.IntN(2048))
						rand.Read(msg)
						digest := hashOf(sc.opts.HashFunc(), msg)
						sig, err := s.Sign(rand.Reader, digest, sc.opts)
						if err != nil {
							t.Fatal(err)
						}
						if err := verify(key.Public(), digest, sig, sc.opts); err != nil {
							t.Fatalf("message of %d bytes: %v", len(msg), err)
						}
						// A flipped digest bit must not verify: the
						// check above is not vacuous.
						bad := bytes.Clone(digest)
						bad[0] ^= 1
						if verify(key.Public(), bad, sig, sc.opts) == nil {
							t.Fatal("signature verifies for a different digest")
						}
					}
				})
			}
		}
	}
}

func hashOf(h crypto.Hash, msg []byte) []byte {
	switch h {
	case crypto.SHA256:
		d := sha256.Sum256(msg)
		return d[:]
	case crypto.SHA384:
		d := sha512.Sum384(msg)
		return d[:]
	case crypto.SHA512:
		d := sha512.Sum512(msg)
		return d[:]
	}
	hh := h.New()
	hh.Write(msg)
	return hh.Sum(nil)
}

func verify(pub crypto.PublicKey, digest, sig []byte, opts crypto.SignerOpts) error {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			vo := *pss
			if vo.SaltLength == rsa.PSSSaltLengthAuto {
				vo.SaltLength = rsa.PSSSaltLengthAuto // verifier detects it
			}
			return rsa.VerifyPSS(p, pss.Hash, digest, sig, &vo)
		}
		return rsa.VerifyPKCS1v15(p, opts.HashFunc(), digest, sig)
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(p, digest, sig) {
			return errors.New("ECDSA signature does not verify")
		}
		return nil
	}
	return errors.New("unknown key")
}

// blockingProvider is a small fake: its keys sign only when the test
// releases them, so the queue can be filled deterministically.
type blockingProvider struct {
	started chan struct{} // one value per signature that reached Sign
	release chan struct{} // closed to let every signature finish
	imports atomic.Int32
	batches chan int // sizes of SignBatch calls, when batching
}

func (b *blockingProvider) Name() string { return "blocking" }
func (b *blockingProvider) Close() error { return nil }
func (b *blockingProvider) Import(k crypto.Signer) (Key, error) {
	b.imports.Add(1)
	return &blockingKey{b, k}, nil
}

type blockingKey struct {
	b *blockingProvider
	k crypto.Signer
}

func (k *blockingKey) Public() crypto.PublicKey { return k.k.Public() }
func (k *blockingKey) Sign(d []byte, o crypto.SignerOpts) ([]byte, error) {
	k.b.started <- struct{}{}
	<-k.b.release
	return k.k.Sign(rand.Reader, d, o)
}

type batchingProvider struct{ *blockingProvider }

func (b batchingProvider) SignBatch(ops []*Op) {
	b.batches <- len(ops)
	for _, op := range ops {
		op.Sig, op.Err = op.Key.(*blockingKey).k.Sign(rand.Reader, op.Digest, op.Opts)
	}
}

// engineWith builds an engine around a test provider.
func engineWith(t *testing.T, p Provider, cfg configs.Accel, reg prometheus.Registerer) *Engine {
	t.Helper()
	e := newEngine(t, cfg, reg)
	e.prov = p
	return e
}

func TestOverloadRejectsFastAndLeaksNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	reg := prometheus.NewRegistry()
	bp := &blockingProvider{started: make(chan struct{}, 64), release: make(chan struct{})}
	const queue = 4
	e, err := New(configs.Accel{Workers: 1, QueueSize: queue, Timeout: time.Hour}, Deps{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	e.prov = bp
	cert, err := e.Wrap(selfSigned(t, testKeys()["ecdsa_p256"]))
	if err != nil {
		t.Fatal(err)
	}
	s := cert.PrivateKey.(crypto.Signer)
	digest := make([]byte, 32)

	// One signature occupies the only worker ...
	results := make(chan error, 64)
	sign := func() {
		_, err := s.Sign(rand.Reader, digest, crypto.SHA256)
		results <- err
	}
	go sign()
	<-bp.started
	// ... queue more fill the queue ...
	for range queue {
		go sign()
	}
	for len(e.queue) < queue {
		runtime.Gosched()
	}
	// ... and every further one is refused at once, without waiting.
	const extra = 20
	for range extra {
		if _, err := s.Sign(rand.Reader, digest, crypto.SHA256); !errors.Is(err, ErrOverloaded) {
			t.Fatalf("sign on a full queue: got %v, want ErrOverloaded", err)
		}
	}
	close(bp.release)
	for range queue + 1 {
		if err := <-results; err != nil {
			t.Fatalf("queued signature: %v", err)
		}
	}
	if got := value(e.m.ops.WithLabelValues("blocking", "ecdsa_p256", ResultOverload)); got != extra {
		t.Errorf("overload counter = %v, want %d", got, extra)
	}
	if got := value(e.m.ops.WithLabelValues("blocking", "ecdsa_p256", ResultOK)); got != queue+1 {
		t.Errorf("ok counter = %v, want %d", got, queue+1)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign(rand.Reader, digest, crypto.SHA256); !errors.Is(err, ErrClosed) {
		t.Fatalf("sign after Close: %v, want ErrClosed", err)
	}
	waitGoroutines(t, before)
}

// waitGoroutines waits until the goroutine count is back to n (exited
// goroutines are reaped asynchronously), failing after a bound.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d, want %d\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

func TestTimeoutAbandonsQueuedSignature(t *testing.T) {
	bp := &blockingProvider{started: make(chan struct{}, 8), release: make(chan struct{})}
	e := engineWith(t, bp, configs.Accel{Workers: 1, QueueSize: 4, Timeout: 20 * time.Millisecond}, prometheus.NewRegistry())
	cert, _ := e.Wrap(selfSigned(t, testKeys()["ecdsa_p256"]))
	s := cert.PrivateKey.(crypto.Signer)
	first := make(chan error, 1)
	go func() { _, err := s.Sign(rand.Reader, make([]byte, 32), crypto.SHA256); first <- err }()
	<-bp.started
	// The worker is stuck in the provider (a hung HSM): the signature
	// it holds and the one queued behind it both give up at the
	// timeout instead of holding their handshakes.
	if _, err := s.Sign(rand.Reader, make([]byte, 32), crypto.SHA256); !errors.Is(err, ErrTimeout) {
		t.Fatalf("queued: got %v, want ErrTimeout", err)
	}
	if err := <-first; !errors.Is(err, ErrTimeout) {
		t.Fatalf("in the provider: got %v, want ErrTimeout", err)
	}
	close(bp.release)
	// The worker then takes the abandoned request and skips it: it
	// never reaches the provider.
	for len(e.queue) > 0 {
		runtime.Gosched()
	}
	e.Close()
	if n := len(bp.started); n != 0 {
		t.Fatalf("%d abandoned signatures reached the provider", n)
	}
	if got := value(e.m.ops.WithLabelValues("blocking", "ecdsa_p256", ResultTimeout)); got != 2 {
		t.Errorf("timeout counter = %v, want 2", got)
	}
}

func TestBatchCollectsWaitingSignatures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		deadline time.Duration
		want     []int // sizes of SignBatch calls
	}{
		{"off", 0, nil},
		// Six wait while the worker is busy: a full batch of 4 at once,
		// then 2 when the deadline passes.
		{"on", 20 * time.Millisecond, []int{4, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bp := &blockingProvider{started: make(chan struct{}, 8), release: make(chan struct{}), batches: make(chan int, 8)}
			e := engineWith(t, batchingProvider{bp}, configs.Accel{Workers: 1, QueueSize: 16, Timeout: time.Hour,
				Batch: configs.AccelBatch{Size: 4, Deadline: tc.deadline}}, prometheus.NewRegistry())
			c, _ := e.Wrap(selfSigned(t, testKeys()["ecdsa_p256"]))
			s := c.PrivateKey.(crypto.Signer)
			done := make(chan error, 16)
			sign := func() { _, err := s.Sign(rand.Reader, make([]byte, 32), crypto.SHA256); done <- err }
			// A lone signature is a batch of one, signed by Key.Sign,
			// which blocks the worker: started fires after its batch
			// was collected, so the next six cannot join it.
			go sign()
			<-bp.started
			for range 6 {
				go sign()
			}
			for len(e.queue) < 6 {
				runtime.Gosched()
			}
			close(bp.release)
			for range 7 {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			var got []int
			for len(got) < len(tc.want) {
				got = append(got, <-bp.batches)
			}
			select {
			case n := <-bp.batches:
				got = append(got, n)
			default:
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("SignBatch sizes %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWrapImportsOncePerCertificate(t *testing.T) {
	bp := &blockingProvider{started: make(chan struct{}, 8), release: make(chan struct{})}
	close(bp.release)
	reg := prometheus.NewRegistry()
	e := engineWith(t, bp, configs.Accel{}, reg)
	c := selfSigned(t, testKeys()["rsa2048"])
	var first *tls.Certificate
	for i := range 5 {
		w, err := e.Wrap(c)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = w
		}
		if w.PrivateKey != first.PrivateKey {
			t.Fatal("a second Wrap made a second signer")
		}
		// Wrapping a wrapped certificate is a no-op.
		if ww, _ := e.Wrap(w); ww.PrivateKey != w.PrivateKey {
			t.Fatal("re-wrap changed the signer")
		}
	}
	if n := bp.imports.Load(); n != 1 {
		t.Fatalf("key imported %d times, want 1", n)
	}
	if c.PrivateKey == first.PrivateKey {
		t.Fatal("Wrap modified the caller's certificate")
	}
	if _, err := e.Wrap(&tls.Certificate{}); err == nil {
		t.Fatal("Wrap of an empty certificate succeeded")
	}
	if got := value(e.m.keys); got != 1 {
		t.Fatalf("ztgate_accel_keys = %v, want 1", got)
	}
}

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

// TestUnsupportedKeyFallsBackToGo: OpenSSL is not asked to hold Ed25519
// keys; the engine serves them with go and counts the fallback.
func TestUnsupportedKeyFallsBackToGo(t *testing.T) {
	if _, ok := providers(t)["openssl"]; !ok {
		testenv.Missing(t, "libcrypto.so.3 cannot be loaded (apt-get install libssl3)")
	}
	e := newEngine(t, configs.Accel{Provider: "openssl", Required: true}, prometheus.NewRegistry())
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	c, err := e.Wrap(selfSigned(t, priv))
	if err != nil {
		t.Fatal(err)
	}
	s := c.PrivateKey.(*signer)
	if s.prov.Name() != "go" {
		t.Fatalf("ed25519 served by %s", s.prov.Name())
	}
	msg := []byte("hello")
	sig, err := s.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil || !ed25519.Verify(priv.Public().(ed25519.PublicKey), msg, sig) {
		t.Fatalf("ed25519 via go: %v", err)
	}
	if got := value(e.m.fallbacks.WithLabelValues("openssl", "import")); got != 1 {
		t.Fatalf("import fallbacks = %v, want 1", got)
	}
}

// TestConcurrentWrapAndSign signs from many goroutines with keys wrapped
// concurrently: every signature verifies (run with -race for the cgo
// provider's memory handling).
func TestConcurrentWrapAndSign(t *testing.T) {
	for pname, cfg := range providers(t) {
		t.Run(pname, func(t *testing.T) {
			e := newEngine(t, cfg, prometheus.NewRegistry())
			certs := []*tls.Certificate{selfSigned(t, testKeys()["rsa2048"]), selfSigned(t, testKeys()["ecdsa_p256"])}
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := e.Wrap(certs[g%2])
					if err != nil {
						errs <- err
						return
					}
					s := c.PrivateKey.(crypto.Signer)
					for i := range 25 {
						d := sha256.Sum256([]byte{byte(g), byte(i)})
						var o crypto.SignerOpts = crypto.SHA256
						if g%4 == 0 {
							o = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
						}
						sig, err := s.Sign(rand.Reader, d[:], o)
						if err == nil {
							err = verify(s.Public(), d[:], sig, o)
						}
						if err != nil {
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
			if got := value(e.m.keys); got != 2 {
				t.Fatalf("%v keys imported, want 2", got)
			}
		})
	}
}

// cpuProvider is blockingProvider declared CPU-bound, so the engine may
// sign on the caller's goroutine. Its keys record the goroutine that
// signed, and Close records a call made while a signature was running.
type cpuProvider struct {
	*blockingProvider
	inflight  atomic.Int32
	maxSeen   atomic.Int32
	closeBusy atomic.Bool
	signedOn  chan uint64
}

func (c *cpuProvider) Name() string   { return "cpu" }
func (c *cpuProvider) cpuBound() bool { return true }
func (c *cpuProvider) Close() error {
	c.closeBusy.Store(c.inflight.Load() != 0)
	return nil
}
func (c *cpuProvider) Import(k crypto.Signer) (Key, error) { return &cpuKey{c, k}, nil }

type cpuKey struct {
	c *cpuProvider
	k crypto.Signer
}

func (k *cpuKey) Public() crypto.PublicKey { return k.k.Public() }
func (k *cpuKey) Sign(d []byte, o crypto.SignerOpts) ([]byte, error) {
	n := k.c.inflight.Add(1)
	defer k.c.inflight.Add(-1)
	for m := k.c.maxSeen.Load(); n > m && !k.c.maxSeen.CompareAndSwap(m, n); m = k.c.maxSeen.Load() {
	}
	k.c.signedOn <- goid()
	k.c.started <- struct{}{}
	<-k.c.release
	return k.k.Sign(rand.Reader, d, o)
}

// goid is the current goroutine's number, from its stack header.
func goid() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := strings.Fields(string(buf))
	n, _ := strconv.ParseUint(f[1], 10, 64)
	return n
}

func newCPUProvider() *cpuProvider {
	return &cpuProvider{blockingProvider: &blockingProvider{started: make(chan struct{}, 16), release: make(chan struct{})},
		signedOn: make(chan uint64, 16)}
}

// TestInlineSigning: with batching off, a CPU-bound provider signs on the
// caller's goroutine while a worker's slot is free; callers beyond the
// slots queue for the workers, so no more than `workers` provider calls
// run at once; Close waits for a signature running on its caller.
func TestInlineSigning(t *testing.T) {
	before := runtime.NumGoroutine()
	cp := newCPUProvider()
	reg := prometheus.NewRegistry()
	e, err := New(configs.Accel{Workers: 2, QueueSize: 8, Timeout: time.Hour}, Deps{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	e.prov = cp
	c, err := e.Wrap(selfSigned(t, testKeys()["ecdsa_p256"]))
	if err != nil {
		t.Fatal(err)
	}
	s := c.PrivateKey.(crypto.Signer)
	digest := sha256.Sum256([]byte("inline"))
	type result struct {
		caller uint64
		err    error
	}
	results := make(chan result, 8)
	sign := func() {
		id := goid()
		sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err == nil && !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest[:], sig) {
			err = errors.New("signature does not verify")
		}
		results <- result{id, err}
	}

	// Two signatures take the two slots, on their own goroutines.
	callers := map[uint64]bool{}
	for range 2 {
		go sign()
		<-cp.started
	}
	for range 2 {
		callers[<-cp.signedOn] = true
	}
	// Three more find no slot free and wait (in the queue, or taken by
	// a worker that waits for a slot).
	for range 3 {
		go sign()
	}
	for e.waiting.Load() < 3 {
		runtime.Gosched()
	}
	if n := cp.inflight.Load(); n != 2 {
		t.Fatalf("%d signatures in the provider, want 2 (one per worker)", n)
	}
	close(cp.release)
	for range 5 {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		delete(callers, r.caller)
	}
	if len(callers) != 0 {
		t.Errorf("the first two signatures were not made on their callers' goroutines")
	}
	if n := cp.maxSeen.Load(); n != 2 {
		t.Errorf("at most %d provider calls ran at once, want 2 (the worker count)", n)
	}
	if got := value(e.m.ops.WithLabelValues("cpu", "ecdsa_p256", ResultOK)); got != 5 {
		t.Errorf("ok counter = %v, want 5", got)
	}

	// Close while a signature runs on its caller: Close waits for it.
	cp2 := newCPUProvider()
	e.prov = cp2
	e.mu.Lock()
	clear(e.cache)
	e.mu.Unlock()
	c2, err := e.Wrap(selfSigned(t, testKeys()["ecdsa_p256"]))
	if err != nil {
		t.Fatal(err)
	}
	s = c2.PrivateKey.(crypto.Signer)
	go sign()
	<-cp2.started
	<-cp2.signedOn
	closed := make(chan error)
	go func() { closed <- e.Close() }()
	for len(e.slots) < cap(e.slots) { // Close holds the free slot and waits for the busy one
		runtime.Gosched()
	}
	close(cp2.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if r := <-results; r.err != nil {
		t.Fatalf("signature running during Close: %v", r.err)
	}
	if cp2.closeBusy.Load() {
		t.Error("the provider was closed while a signature was still running")
	}
	if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); !errors.Is(err, ErrClosed) {
		t.Fatalf("sign after Close: %v, want ErrClosed", err)
	}
	waitGoroutines(t, before)
}

// TestInlineOnlyForCPUProviders: batching on, or a provider that is not
// CPU-bound (a token, a card behind an OpenSSL provider), always goes
// through the workers, where the timeout holds.
func TestInlineOnlyForCPUProviders(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  configs.Accel
		prov Provider
		want bool
	}{
		{"go", configs.Accel{}, goProvider{}, true},
		{"cpu-bound, batching on", configs.Accel{Batch: configs.AccelBatch{Size: 8, Deadline: time.Millisecond}}, goProvider{}, false},
		{"cpu-bound, batch of one", configs.Accel{Batch: configs.AccelBatch{Size: 1, Deadline: time.Millisecond}}, goProvider{}, true},
		{"not cpu-bound", configs.Accel{}, &blockingProvider{}, false},
		{"pkcs11", configs.Accel{}, pkcs11Provider{}, false},
		{"openssl with qatprovider", configs.Accel{}, &opensslProvider{builtin: false}, false},
		{"openssl built in", configs.Accel{}, &opensslProvider{builtin: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, tc.cfg, nil)
			s := e.newSigner(tc.prov, goKey{testKeys()["ecdsa_p256"]})
			if s.inline != tc.want {
				t.Errorf("inline = %v, want %v", s.inline, tc.want)
			}
		})
	}
}
