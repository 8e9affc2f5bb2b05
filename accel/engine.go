package accel

import (
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
)

// Deps are the process-wide things an Engine uses.
type Deps struct {
	Logger  *slog.Logger
	Metrics prometheus.Registerer
}

// Sentinel errors of a signature; a handshake that gets one fails.
var (
	ErrOverloaded = errors.New("accel: signing queue is full")
	ErrTimeout    = errors.New("accel: signature timed out")
	ErrClosed     = errors.New("accel: engine is closed")
)

// Defaults used when a field of configs.Accel is zero (configs sets the
// same ones; these cover engines built in code, e.g. by Bench).
const (
	DefaultQueuePerWorker = 256
	DefaultTimeout        = 2 * time.Second
	DefaultBatchSize      = 8
	maxCachedKeys         = 10000
)

// Engine serves private-key operations through one provider with a
// bounded queue and a worker pool. It is safe for concurrent use and
// lives for the process (a config reload keeps it).
type Engine struct {
	log  *slog.Logger
	m    *metrics
	cfg  configs.Accel
	prov Provider // the chosen provider
	gop  Provider // go, for keys the chosen provider cannot hold

	queue     chan *request
	waiting   atomic.Int64  // queued signatures no worker has taken yet
	slots     chan struct{} // one per worker: provider calls in progress
	inline    bool          // batching off: sign on the caller when a slot is free
	timeout   time.Duration
	workers   int
	batchSize int
	deadline  time.Duration

	quit   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool
	once   sync.Once

	mu    sync.Mutex
	cache map[[32]byte]*signer
	order [][32]byte // insertion order, for eviction

	hsm hsmPool
}

// New builds the engine the config asks for. With required: false a
// provider that cannot be loaded is logged, counted as a fallback and
// replaced by go; with required: true it is an error.
func New(cfg configs.Accel, deps Deps) (*Engine, error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	kind, err := ParseKind(orDefault(cfg.Provider, "go"))
	if err != nil {
		return nil, err
	}
	e := &Engine{
		log:       deps.Logger.With("component", "accel"),
		cfg:       cfg,
		gop:       goProvider{},
		workers:   cfg.Workers,
		timeout:   cfg.Timeout,
		batchSize: cfg.Batch.Size,
		deadline:  cfg.Batch.Deadline,
		quit:      make(chan struct{}),
		cache:     map[[32]byte]*signer{},
	}
	if e.workers <= 0 {
		e.workers = runtime.GOMAXPROCS(0)
	}
	q := cfg.QueueSize
	if q <= 0 {
		q = DefaultQueuePerWorker * e.workers
	}
	if e.timeout <= 0 {
		e.timeout = DefaultTimeout
	}
	if e.batchSize <= 0 {
		e.batchSize = DefaultBatchSize
	}
	e.queue = make(chan *request, q)
	e.slots = make(chan struct{}, e.workers)
	e.inline = e.deadline <= 0 || e.batchSize == 1
	e.hsm.cfg = cfg.PKCS11
	e.m, err = newMetrics(deps.Metrics, func() float64 { return float64(e.waiting.Load()) })
	if err != nil {
		return nil, fmt.Errorf("accel: metrics: %w", err)
	}

	prov, err := e.choose(kind, cfg)
	if err != nil {
		return nil, err
	}
	e.prov = prov
	attrs := []any{LogProvider, prov.Name(), LogRequested, kind.String(), LogCPU, CPUFeatures(),
		LogWorkers, e.workers, LogQueue, q, LogBatch, e.batchSize, LogDeadline, e.deadline.String()}
	if op, ok := prov.(*opensslProvider); ok {
		attrs = append(attrs, LogLibrary, op.p.Library(), LogVersion, op.p.Version())
	}
	e.log.Info("accel provider ready", attrs...)
	for range e.workers {
		e.wg.Add(1)
		go e.work()
	}
	return e, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// choose opens the provider for kind, applying required.
func (e *Engine) choose(kind Kind, cfg configs.Accel) (Provider, error) {
	switch kind {
	case KindGo:
		return e.gop, nil
	case KindOpenSSL:
		p, err := openOpenSSL(cfg.OpenSSL)
		if err == nil {
			return p, nil
		}
		return e.fallback(kind, cfg.Required, err)
	case KindPKCS11:
		// HSM keys come through LoadKey; Wrap imports in-memory keys
		// nowhere, so certificates from files or ACME are signed by go.
		if err := e.hsm.check(); err != nil {
			return e.fallback(kind, cfg.Required, err)
		}
		return pkcs11Provider{}, nil
	case KindAuto:
		return e.auto(cfg)
	}
	return nil, fmt.Errorf("accel: provider %s is not implemented", kind)
}

func (e *Engine) fallback(kind Kind, required bool, err error) (Provider, error) {
	if required {
		return nil, fmt.Errorf("accel: provider %s (required: true): %w", kind, err)
	}
	e.m.fallbacks.WithLabelValues(kind.String(), "unavailable").Inc()
	e.log.Warn("accel provider unavailable, using go (set required: true to refuse to start)",
		LogProvider, kind.String(), LogReason, err.Error())
	return e.gop, nil
}

// Provider returns the name of the provider in use.
func (e *Engine) Provider() string { return e.prov.Name() }

// Wrap returns a copy of cert whose PrivateKey is a crypto.Signer served
// by the engine. The key is imported into the provider once per
// certificate (cached by the leaf's SHA-256). Keys the provider cannot
// hold (Ed25519 in openssl, in-memory keys with pkcs11) are served by go
// and counted in ztgate_accel_fallbacks_total.
func (e *Engine) Wrap(cert *tls.Certificate) (*tls.Certificate, error) {
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("accel: wrap: certificate has no leaf")
	}
	if e.closed.Load() {
		return nil, ErrClosed
	}
	out := *cert
	if s, ok := cert.PrivateKey.(*signer); ok && s.e == e {
		return &out, nil // already served by this engine
	}
	priv, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("accel: wrap: private key %T cannot sign", cert.PrivateKey)
	}
	fp := sha256.Sum256(cert.Certificate[0])
	e.mu.Lock()
	defer e.mu.Unlock()
	if s, ok := e.cache[fp]; ok {
		out.PrivateKey = s
		return &out, nil
	}
	s, err := e.importKey(priv)
	if err != nil {
		return nil, err
	}
	if len(e.cache) >= maxCachedKeys {
		// Forget the oldest; certificates already handed out keep
		// their signer (and its provider key) alive until unused.
		delete(e.cache, e.order[0])
		e.order = e.order[1:]
	}
	e.cache[fp] = s
	e.order = append(e.order, fp)
	e.m.keys.Set(float64(len(e.cache)))
	out.PrivateKey = s
	return &out, nil
}

func (e *Engine) importKey(priv crypto.Signer) (*signer, error) {
	prov := e.prov
	k, err := prov.Import(priv)
	if err != nil {
		if !errors.Is(err, ErrUnsupportedKey) && e.cfg.Required {
			return nil, fmt.Errorf("accel: import %s key into %s: %w", KeyType(priv.Public()), prov.Name(), err)
		}
		if prov != e.gop {
			e.m.fallbacks.WithLabelValues(prov.Name(), "import").Inc()
			e.log.Warn("accel key served by go instead", LogProvider, prov.Name(), LogReason, err.Error())
		}
		prov = e.gop
		if k, err = prov.Import(priv); err != nil {
			return nil, err
		}
	}
	return e.newSigner(prov, k), nil
}

func (e *Engine) newSigner(prov Provider, k Key) *signer {
	pub := k.Public()
	kt := KeyType(pub)
	cb, _ := prov.(cpuBound)
	return &signer{
		e: e, prov: prov, key: k, pub: pub, keyType: kt,
		inline: e.inline && cb != nil && cb.cpuBound(),
		okC:    e.m.ops.WithLabelValues(prov.Name(), kt, ResultOK),
		errC:   e.m.ops.WithLabelValues(prov.Name(), kt, ResultError),
		lat:    e.m.latency.WithLabelValues(prov.Name(), kt),
	}
}

// Close stops the workers; queued and later signatures fail with
// ErrClosed. It waits for provider calls in progress to return.
func (e *Engine) Close() error {
	var err error
	e.once.Do(func() {
		e.closed.Store(true)
		close(e.quit)
		e.wg.Wait()
		// Take every slot: signatures made on their callers' goroutines
		// finish first, and none starts after (they queue and fail).
		for range e.workers {
			e.slots <- struct{}{}
		}
		err = errors.Join(e.prov.Close(), e.hsm.close())
	})
	return err
}

// signer is the crypto.Signer handed to crypto/tls.
type signer struct {
	e       *Engine
	prov    Provider
	key     Key
	pub     crypto.PublicKey
	keyType string
	inline  bool // may sign on the caller's goroutine (see Sign)

	okC, errC prometheus.Counter
	lat       prometheus.Observer
}

var _ crypto.Signer = (*signer)(nil)

func (s *signer) Public() crypto.PublicKey { return s.pub }

// Sign queues the signature and waits for a worker. A full queue fails
// at once with ErrOverloaded; a wait longer than the engine's timeout
// fails with ErrTimeout.
//
// With batching off and a provider that computes on this host's CPU (go,
// openssl), a signature that finds the queue empty and a worker's slot
// free is made on the calling goroutine instead: no hand-off to a worker
// and back, and still at most one provider call per worker at a time.
func (s *signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	e := s.e
	if e.closed.Load() {
		e.count(s, ResultClosed)
		return nil, ErrClosed
	}
	start := time.Now()
	if s.inline && e.waiting.Load() == 0 {
		select {
		case e.slots <- struct{}{}:
			e.m.batch.Observe(1)
			sig, err := safeSign(s.key, digest, opts)
			<-e.slots
			return s.done(start, sig, err)
		default:
		}
	}
	r := &request{s: s, digest: digest, opts: opts, done: make(chan struct{})}
	e.waiting.Add(1)
	select {
	case e.queue <- r:
	default:
		e.waiting.Add(-1)
		e.count(s, ResultOverload)
		return nil, ErrOverloaded
	}
	t := time.NewTimer(e.timeout)
	defer t.Stop()
	select {
	case <-r.done:
	case <-t.C:
		// Queued: the worker will skip it. Already signing (a slow
		// HSM): the worker finishes and its answer is dropped. Either
		// way the handshake does not wait longer than the timeout.
		if r.state.CompareAndSwap(stateQueued, stateAbandoned) {
			e.waiting.Add(-1)
		}
		e.count(s, ResultTimeout)
		return nil, ErrTimeout
	case <-e.quit:
		if r.state.CompareAndSwap(stateQueued, stateAbandoned) {
			e.waiting.Add(-1)
			e.count(s, ResultClosed)
			return nil, ErrClosed
		}
		<-r.done
	}
	return s.done(start, r.sig, r.err)
}

// done counts a signature the provider made (or refused).
func (s *signer) done(start time.Time, sig []byte, err error) ([]byte, error) {
	s.lat.Observe(time.Since(start).Seconds())
	if err != nil {
		s.errC.Inc()
		return nil, fmt.Errorf("accel: %s sign: %w", s.prov.Name(), err)
	}
	s.okC.Inc()
	return sig, nil
}

// cpuBound is implemented by providers whose signatures are computation
// on this host's CPU, short and bounded (go; openssl with its built-in
// algorithms). The engine may sign for them on the calling goroutine. A
// token or a card (pkcs11, an OpenSSL provider such as qatprovider) is
// always reached through the queue, so that the timeout holds when it
// hangs.
type cpuBound interface{ cpuBound() bool }

func (e *Engine) count(s *signer, result string) {
	e.m.ops.WithLabelValues(s.prov.Name(), s.keyType, result).Inc()
}

const (
	stateQueued int32 = iota
	stateTaken
	stateAbandoned
)

type request struct {
	s      *signer
	digest []byte
	opts   crypto.SignerOpts
	state  atomic.Int32

	sig  []byte
	err  error
	done chan struct{}
}

// work is one worker: take a request, optionally collect a batch, sign.
func (e *Engine) work() {
	defer e.wg.Done()
	batch := make([]*request, 0, e.batchSize)
	var timer *time.Timer
	if e.deadline > 0 && e.batchSize > 1 {
		timer = time.NewTimer(time.Hour)
		timer.Stop()
	}
	for {
		batch = batch[:0]
		select {
		case <-e.quit:
			return
		case r := <-e.queue:
			batch = append(batch, r)
		}
		if timer != nil {
			timer.Reset(e.deadline)
		collect:
			for len(batch) < e.batchSize {
				select {
				case r := <-e.queue:
					batch = append(batch, r)
				case <-timer.C:
					break collect
				case <-e.quit:
					break collect
				}
			}
			timer.Stop()
		}
		// A slot per provider call, shared with signatures made on
		// their callers' goroutines.
		select {
		case e.slots <- struct{}{}:
		case <-e.quit:
			return // the batch's callers see quit and fail with ErrClosed
		}
		e.run(batch)
		<-e.slots
	}
}

// run signs a batch: requests whose caller gave up are skipped, the rest
// go to the provider as one batch when it can take one.
func (e *Engine) run(batch []*request) {
	live := batch[:0]
	for _, r := range batch {
		if r.state.CompareAndSwap(stateQueued, stateTaken) {
			e.waiting.Add(-1)
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}
	e.m.batch.Observe(float64(len(live)))
	if bp, ok := live[0].s.prov.(BatchProvider); ok && len(live) > 1 && sameProvider(live) {
		ops := make([]*Op, len(live))
		for i, r := range live {
			ops[i] = &Op{Key: r.s.key, Digest: r.digest, Opts: r.opts}
		}
		bp.SignBatch(ops)
		for i, r := range live {
			r.sig, r.err = ops[i].Sig, ops[i].Err
			close(r.done)
		}
		return
	}
	for _, r := range live {
		r.sig, r.err = safeSign(r.s.key, r.digest, r.opts)
		close(r.done)
	}
}

// safeSign turns a provider panic into this handshake's error rather
// than the end of the worker (and the process).
func safeSign(k Key, digest []byte, opts crypto.SignerOpts) (sig []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			sig, err = nil, fmt.Errorf("provider panic: %v", p)
		}
	}()
	return k.Sign(digest, opts)
}

func sameProvider(rs []*request) bool {
	for _, r := range rs[1:] {
		if r.s.prov != rs[0].s.prov {
			return false
		}
	}
	return true
}
