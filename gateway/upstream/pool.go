package upstream

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ztgate/ztgate/configs"
)

// Deps are the process-lifetime things a pool uses.
type Deps struct {
	Logger  *slog.Logger
	Metrics *Metrics
	// SPIFFETLS returns the client tls.Config for a SPIFFE upstream,
	// verifying the peer's SPIFFE ID and presenting the gateway's SVID
	// through GetClientCertificate (so a rotated SVID is used by new
	// connections). Nil: SPIFFE upstreams answer 503.
	SPIFFETLS func(t *configs.UpstreamTLS) (*tls.Config, error)
	// SPIFFEUnavailable, when set, is the sentinel (errors.Is) of a
	// handshake that failed because the gateway holds no valid SVID
	// (svid.ErrNoSVID): such a request is answered 503 tls_unavailable,
	// not retried and not held against the endpoint.
	SPIFFEUnavailable error

	hooks *testHooks // set by this package's tests only
}

// testHooks let tests wait on events instead of time.
type testHooks struct {
	onCheck  func()                          // after each health round
	onEject  func(addr string, ejected bool) // ejection and return
	onRotate func()                          // a new transport generation (max_connection_age)
}

// LB is a load-balancing policy; String matches the config spelling.
type LB uint8

const (
	RoundRobin LB = iota
	LeastRequests
)

func (l LB) String() string {
	if l == LeastRequests {
		return configs.LBLeastRequests
	}
	return configs.LBRoundRobin
}

// Pool is one upstream: endpoints, connection pool, balancing, health.
type Pool struct {
	name     string
	cfg      configs.Upstream
	lb       LB
	scheme   string
	tlsConf  *tls.Config
	gen      atomic.Pointer[generation]
	rotate   *time.Timer // max_connection_age; guarded by mu
	tlsErr   error       // non-nil: every request fails with KindTLSUnavailable
	noSVID   error       // Deps.SPIFFEUnavailable
	eps      []*endpoint
	log      *slog.Logger
	metrics  *Metrics
	duration prometheusObserver
	retryOn  retryOn

	rr        atomic.Uint64
	panicLog  atomic.Int64 // unix nanos of the last "all unhealthy" log
	inflight  atomic.Int64
	current   atomic.Bool // the registry's pool for this name (owns the health gauge)
	retired   atomic.Bool
	closed    atomic.Bool
	stop      chan struct{}
	done      chan struct{} // closed when the health goroutine exits
	mu        sync.Mutex    // ejection bookkeeping
	ejected   int
	healthRun atomic.Bool // one full round of active checks has completed
	hooks     testHooks
}

type prometheusObserver interface{ Observe(float64) }

type retryOn struct {
	connect, reset bool
	status         [3]bool // 502, 503, 504
}

func (r retryOn) onStatus(code int) bool {
	return code >= 502 && code <= 504 && r.status[code-502]
}

type endpoint struct {
	addr        string
	outstanding atomic.Int64
	failures    atomic.Int32 // consecutive, for outlier detection
	ejected     atomic.Bool
	unhealthy   atomic.Bool // active health check verdict
	ejectTimer  *time.Timer // guarded by Pool.mu
	counters    endpointCounters
	// active health check streaks, touched by the health goroutine only
	okStreak, failStreak int
	checked              bool
}

func (e *endpoint) available() bool { return !e.ejected.Load() && !e.unhealthy.Load() }

// New builds a pool for one upstream. It starts the health-check
// goroutine when health_check is set; Close stops it.
func New(cfg configs.Upstream, deps Deps) (*Pool, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("upstream %q: no endpoints", cfg.Name)
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Metrics == nil {
		deps.Metrics, _ = NewMetrics(nil)
	}
	p := &Pool{
		name:    cfg.Name,
		cfg:     cfg,
		scheme:  "http",
		log:     deps.Logger.With(LogUpstream, cfg.Name),
		metrics: deps.Metrics,
		noSVID:  deps.SPIFFEUnavailable,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if deps.hooks != nil {
		p.hooks = *deps.hooks
	}
	p.duration = deps.Metrics.duration.WithLabelValues(cfg.Name)
	switch cfg.LoadBalancing {
	case configs.LBLeastRequests:
		p.lb = LeastRequests
	case configs.LBRoundRobin, "":
		p.lb = RoundRobin
	default:
		return nil, fmt.Errorf("upstream %q: load_balancing %q is not valid (use round_robin or least_requests)", cfg.Name, cfg.LoadBalancing)
	}
	for _, on := range cfg.Retries.On {
		switch on {
		case "connect_failure":
			p.retryOn.connect = true
		case "reset":
			p.retryOn.reset = true
		case "502", "503", "504":
			p.retryOn.status[on[2]-'2'] = true
		default:
			return nil, fmt.Errorf("upstream %q: retries.on %q is not valid", cfg.Name, on)
		}
	}
	tlsConf, err := clientTLS(&cfg, deps)
	switch {
	case errors.Is(err, errNoSPIFFE):
		p.tlsErr = err
	case err != nil:
		return nil, fmt.Errorf("upstream %q: %w", cfg.Name, err)
	}
	if cfg.TLS != nil {
		p.scheme = "https"
	}
	if p.tlsErr == nil {
		p.tlsConf = tlsConf
		p.gen.Store(newGeneration(&cfg, tlsConf))
		if cfg.MaxConnectionAge > 0 {
			p.mu.Lock() // the timer may fire before New returns
			p.rotate = time.AfterFunc(cfg.MaxConnectionAge, p.rotateTransport)
			p.mu.Unlock()
		}
	}
	for _, addr := range cfg.Endpoints {
		e := &endpoint{addr: addr}
		e.counters = endpointCounters{m: deps.Metrics, upstream: cfg.Name, endpoint: addr}
		p.eps = append(p.eps, e)
	}
	if cfg.HealthCheck != nil && p.tlsErr == nil {
		hc, err := newHealthChecker(p, cfg.HealthCheck)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: health_check: %w", cfg.Name, err)
		}
		go hc.run()
	} else {
		p.healthRun.Store(true)
		close(p.done)
	}
	return p, nil
}

// Name is the upstream's name.
func (p *Pool) Name() string { return p.name }

// HealthKnown reports whether the first round of active health checks
// has completed (always true without health_check). /readyz waits on it.
func (p *Pool) HealthKnown() bool { return p.healthRun.Load() }

// EndpointStatus is one endpoint's state, for the admin API.
type EndpointStatus struct {
	Address     string `json:"address"`
	Healthy     bool   `json:"healthy"`
	Ejected     bool   `json:"ejected"`
	Outstanding int64  `json:"outstanding"`
}

// Endpoints returns the endpoints' current state.
func (p *Pool) Endpoints() []EndpointStatus {
	out := make([]EndpointStatus, len(p.eps))
	for i, e := range p.eps {
		out[i] = EndpointStatus{Address: e.addr, Healthy: !e.unhealthy.Load(), Ejected: e.ejected.Load(), Outstanding: e.outstanding.Load()}
	}
	return out
}

// publish sets the health gauge of e, if this pool is the current one.
func (p *Pool) publish(e *endpoint) {
	if !p.current.Load() {
		return
	}
	v := 0.0
	if e.available() {
		v = 1
	}
	p.metrics.healthy.WithLabelValues(p.name, e.addr).Set(v)
}

func (p *Pool) publishAll() {
	for _, e := range p.eps {
		p.publish(e)
	}
}

// pick chooses an endpoint not in tried. When every untried endpoint is
// unhealthy or ejected it fails open (Envoy's panic mode) and picks among
// them all, logging that at most every 10 s.
func (p *Pool) pick(tried []*endpoint) *endpoint {
	// Round robin rotates over the eligible endpoints, so an unhealthy
	// one does not double its neighbour's share. A retry does not move
	// the shared counter.
	var seq uint64
	if p.lb == RoundRobin {
		if len(tried) == 0 {
			seq = p.rr.Add(1)
		} else {
			seq = p.rr.Load()
		}
	}
	if e := p.pickFrom(tried, seq, true); e != nil {
		return e
	}
	e := p.pickFrom(tried, seq, false)
	if e != nil {
		now := time.Now().UnixNano()
		last := p.panicLog.Load()
		if now-last > int64(10*time.Second) && p.panicLog.CompareAndSwap(last, now) {
			p.log.Warn("every endpoint is unhealthy or ejected; sending traffic to all of them (panic mode)")
		}
	}
	return e
}

func isTried(e *endpoint, tried []*endpoint) bool {
	for _, t := range tried {
		if t == e {
			return true
		}
	}
	return false
}

func (p *Pool) pickFrom(tried []*endpoint, seq uint64, healthyOnly bool) *endpoint {
	var buf [16]*endpoint
	cand := buf[:0]
	for _, e := range p.eps {
		if (!healthyOnly || e.available()) && !isTried(e, tried) {
			cand = append(cand, e)
		}
	}
	switch {
	case len(cand) == 0:
		return nil
	case len(cand) == 1:
		return cand[0]
	case p.lb == RoundRobin:
		return cand[seq%uint64(len(cand))]
	}
	// Least requests: power of two random choices.
	i := rand.IntN(len(cand))
	j := rand.IntN(len(cand) - 1)
	if j >= i {
		j++
	}
	a, b := cand[i], cand[j]
	if b.outstanding.Load() < a.outstanding.Load() {
		return b
	}
	return a
}

// success resets e's failure streak.
func (p *Pool) success(e *endpoint) {
	if e.failures.Load() != 0 {
		e.failures.Store(0)
	}
}

// failure counts a failure of e (5xx, connect failure, reset, timeout)
// and ejects it after outlier_detection.consecutive_failures in a row,
// unless max_ejection_percent of the endpoints are ejected already.
func (p *Pool) failure(e *endpoint, why string) {
	o := p.cfg.OutlierDetection
	if o.ConsecutiveFailures <= 0 || int(e.failures.Add(1)) < o.ConsecutiveFailures || e.ejected.Load() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.ejected.Load() || p.closed.Load() {
		return
	}
	limit := len(p.eps) * o.MaxEjectionPercent / 100
	if limit < 1 && o.MaxEjectionPercent > 0 {
		limit = 1 // as Envoy: one endpoint can always be ejected
	}
	if p.ejected >= limit {
		return
	}
	p.ejected++
	e.ejected.Store(true)
	e.failures.Store(0)
	p.metrics.ejections.WithLabelValues(p.name, e.addr).Inc()
	p.publish(e)
	p.log.Warn("endpoint ejected after consecutive failures",
		LogEndpoint, e.addr, LogReason, why, "consecutive_failures", o.ConsecutiveFailures, "ejection_time", o.EjectionTime.String())
	e.ejectTimer = time.AfterFunc(o.EjectionTime, func() { p.unEject(e) })
	if p.hooks.onEject != nil {
		p.hooks.onEject(e.addr, true)
	}
}

func (p *Pool) unEject(e *endpoint) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !e.ejected.Load() {
		return
	}
	e.ejected.Store(false)
	e.ejectTimer = nil
	p.ejected--
	p.publish(e)
	if !p.closed.Load() {
		p.log.Info("endpoint returned from ejection", LogEndpoint, e.addr)
	}
	if p.hooks.onEject != nil {
		p.hooks.onEject(e.addr, false)
	}
}

// begin counts a request in flight (for draining a retired pool).
func (p *Pool) begin() { p.inflight.Add(1) }

func (p *Pool) end() {
	if p.inflight.Add(-1) == 0 && p.retired.Load() {
		p.Close()
	}
}

// retire is called when no config snapshot uses the pool any more: it
// closes now if idle, else when the last in-flight request ends. A
// request that still arrives later is served (on a new connection).
func (p *Pool) retire() {
	p.retired.Store(true)
	p.current.Store(false)
	if p.inflight.Load() == 0 {
		p.Close()
	}
}

// Close stops health checks and ejection timers and closes idle
// connections. It is idempotent. Requests in flight finish.
func (p *Pool) Close() {
	if !p.closed.CompareAndSwap(false, true) {
		if g := p.gen.Load(); g != nil {
			g.closeIdle()
		}
		return
	}
	close(p.stop)
	<-p.done
	p.mu.Lock()
	if p.rotate != nil {
		p.rotate.Stop()
	}
	for _, e := range p.eps {
		if e.ejectTimer != nil {
			e.ejectTimer.Stop()
			e.ejectTimer = nil
		}
	}
	p.mu.Unlock()
	if g := p.gen.Load(); g != nil {
		g.retire()
	}
}

// rotateTransport starts a new connection generation (max_connection_age)
// and retires the old one.
func (p *Pool) rotateTransport() {
	p.mu.Lock()
	if p.closed.Load() {
		p.mu.Unlock()
		return
	}
	old := p.gen.Swap(newGeneration(&p.cfg, p.tlsConf))
	p.rotate.Reset(p.cfg.MaxConnectionAge)
	p.mu.Unlock()
	old.retire()
	if p.hooks.onRotate != nil {
		p.hooks.onRotate()
	}
}
