package jwt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/authn"
)

// Deps are the process-wide things the JWT code uses.
type Deps struct {
	Logger *slog.Logger
	// Metrics registers the ztgate_authn_* metrics; nil keeps them
	// unregistered. Only NewKeyCache registers, once per process.
	Metrics prometheus.Registerer
	// Keys is the process-wide JWKS registry; New uses it so that caches
	// survive reloads. When nil, New makes a private one (tests).
	Keys *KeyCache
	// Offline compiles without fetching remote JWKS (for `ztgate
	// validate`): tokens of jwks_uri providers are then refused with
	// jwks_unavailable.
	Offline bool
}

// Bounds of a JWKS fetch.
const (
	maxJWKSBytes     = 1 << 20
	fetchTimeout     = 15 * time.Second
	minRefresh       = 30 * time.Second
	maxRetryInterval = 5 * time.Minute
	firstRetry       = time.Second
)

// KeyCache is the process-wide registry of remote JWKS, keyed by URL and
// CA file. An entry lives while some Authenticator uses it, so an
// unchanged jwks_uri keeps its keys (and its refresh loop) across reloads.
type KeyCache struct {
	log     *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	entries map[string]*remote
	closed  bool
}

// NewKeyCache makes the registry and registers the authn metrics on
// deps.Metrics. Call it once per process.
func NewKeyCache(deps Deps) *KeyCache {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &KeyCache{
		log:     log.With("component", "authn.jwt"),
		metrics: newMetrics(deps.Metrics),
		entries: map[string]*remote{},
	}
}

// remoteSpec says which JWKS to fetch and how often.
type remoteSpec struct {
	uri, ca          string
	refresh          time.Duration
	refetchMinPeriod time.Duration
}

func (s remoteSpec) key() string { return s.uri + "\x00" + s.ca }

// acquire returns the entry for spec, starting it if new, and a release
// function. The entry stops when its last user releases it.
func (c *KeyCache) acquire(spec remoteSpec) (*remote, func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, errors.New("key cache is closed")
	}
	r, ok := c.entries[spec.key()]
	if !ok {
		client, err := newJWKSClient(spec.ca)
		if err != nil {
			return nil, nil, err
		}
		r = newRemote(spec, client, c.log, c.metrics)
		c.entries[spec.key()] = r
		go r.run()
	}
	r.setSpec(spec)
	r.refs++
	var once sync.Once
	release := func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			r.refs--
			if r.refs == 0 && c.entries[spec.key()] == r {
				delete(c.entries, spec.key())
				r.stop()
			}
		})
	}
	return r, release, nil
}

// Ready returns nil when every JWKS in use has keys; otherwise an error
// naming each missing JWKS and why (for /readyz).
func (c *KeyCache) Ready() error {
	c.mu.Lock()
	list := make([]*remote, 0, len(c.entries))
	for _, r := range c.entries {
		list = append(list, r)
	}
	c.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].uri < list[j].uri })
	var errs []error
	for _, r := range list {
		if _, err := r.current(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Wait blocks until every JWKS in use has finished its first fetch
// attempt (successful or not) or ctx ends. The gateway may call it at
// start so that the first requests find keys; tests use it as a signal.
func (c *KeyCache) Wait(ctx context.Context) error {
	c.mu.Lock()
	list := make([]*remote, 0, len(c.entries))
	for _, r := range c.entries {
		list = append(list, r)
	}
	c.mu.Unlock()
	for _, r := range list {
		select {
		case <-r.firstDone:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close stops every refresh loop. Authenticators built on the cache keep
// the keys they have but no longer refresh them.
func (c *KeyCache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for k, r := range c.entries {
		r.stop()
		delete(c.entries, k)
	}
}

func newJWKSClient(caFile string) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("jwks_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("jwks_ca %q: no PEM certificate found", caFile)
		}
		tc.RootCAs = pool
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   1,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   fetchTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme != "https" {
				return errors.New("redirect to a non-https URL refused")
			}
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			return nil
		},
	}, nil
}

// remote is one JWKS URL: its last good keys and the loop that refreshes them.
type remote struct {
	uri     string
	client  *http.Client
	log     *slog.Logger
	metrics *metrics

	keys      atomic.Pointer[keySet]
	firstDone chan struct{}
	stopCh    chan struct{}
	stopOnce  sync.Once
	ctx       context.Context // cancelled by stop: ends an in-flight fetch
	cancel    context.CancelFunc

	mu          sync.Mutex
	spec        remoteSpec
	refs        int
	lastErr     error
	lastRefetch time.Time
	inflight    chan struct{} // closed when the running refetch ends
	firstOnce   sync.Once
}

func newRemote(spec remoteSpec, client *http.Client, log *slog.Logger, m *metrics) *remote {
	ctx, cancel := context.WithCancel(context.Background())
	return &remote{
		ctx:       ctx,
		cancel:    cancel,
		uri:       spec.uri,
		client:    client,
		log:       log.With(authn.LogFieldJWKS, spec.uri),
		metrics:   m,
		firstDone: make(chan struct{}),
		stopCh:    make(chan struct{}),
		spec:      spec,
	}
}

func (r *remote) setSpec(s remoteSpec) {
	r.mu.Lock()
	r.spec = s
	r.mu.Unlock()
}

func (r *remote) stop() {
	r.stopOnce.Do(func() {
		close(r.stopCh)
		r.cancel()
	})
}

func (r *remote) current() (*keySet, error) {
	if ks := r.keys.Load(); ks != nil {
		return ks, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastErr != nil {
		return nil, fmt.Errorf("jwks %s: not loaded: %w", r.uri, r.lastErr)
	}
	return nil, fmt.Errorf("jwks %s: not loaded yet (first fetch in progress)", r.uri)
}

// run fetches at start, then on the refresh interval (shortened by the
// IdP's Cache-Control max-age), retrying failures with backoff.
func (r *remote) run() {
	retry := firstRetry
	for {
		maxAge, err := r.fetch()
		r.firstOnce.Do(func() { close(r.firstDone) })
		r.mu.Lock()
		next := r.spec.refresh
		r.mu.Unlock()
		if err != nil {
			next = min(retry, next, maxRetryInterval)
			retry *= 2
		} else {
			retry = firstRetry
			if maxAge > 0 && maxAge < next {
				next = max(maxAge, minRefresh)
			}
		}
		t := time.NewTimer(next)
		select {
		case <-r.stopCh:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// refetch fetches now because a token named an unknown kid, at most once
// per jwks_refetch_min_interval. Concurrent callers share one fetch.
func (r *remote) refetch(ctx context.Context) (*keySet, bool) {
	r.mu.Lock()
	if ch := r.inflight; ch != nil {
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		return r.keys.Load(), true
	}
	if !r.lastRefetch.IsZero() && time.Since(r.lastRefetch) < r.spec.refetchMinPeriod {
		r.mu.Unlock()
		r.metrics.refetchLimited.WithLabelValues(r.uri).Inc()
		return r.keys.Load(), false
	}
	r.lastRefetch = time.Now()
	ch := make(chan struct{})
	r.inflight = ch
	r.mu.Unlock()

	// The fetch runs on its own so that a caller whose request ends stops
	// waiting without cancelling the fetch for the others.
	go func() {
		_, _ = r.fetch() // the outcome is logged and counted by fetch
		r.mu.Lock()
		r.inflight = nil
		r.mu.Unlock()
		close(ch)
	}()
	select {
	case <-ch:
	case <-ctx.Done():
	}
	return r.keys.Load(), true
}

// fetch gets and parses the JWKS. On failure the last good keys stay.
func (r *remote) fetch() (maxAge time.Duration, err error) {
	ctx, cancel := context.WithTimeout(r.ctx, fetchTimeout)
	defer cancel()
	maxAge, ks, err := r.get(ctx)
	r.mu.Lock()
	r.lastErr = err
	r.mu.Unlock()
	if err != nil {
		r.metrics.fetches.WithLabelValues(r.uri, "error").Inc()
		if r.keys.Load() != nil {
			r.log.Warn("jwks fetch failed; keeping the last good keys", authn.LogFieldError, err.Error())
		} else {
			r.log.Error("jwks fetch failed; tokens of this issuer are refused until it succeeds", authn.LogFieldError, err.Error())
		}
		return 0, err
	}
	r.keys.Store(ks)
	r.metrics.fetches.WithLabelValues(r.uri, "ok").Inc()
	r.metrics.keys.WithLabelValues(r.uri).Set(float64(len(ks.all)))
	r.metrics.lastSuccess.WithLabelValues(r.uri).SetToCurrentTime()
	r.log.Debug("jwks fetched", "keys", len(ks.all))
	return maxAge, nil
}

func (r *remote) get(ctx context.Context) (time.Duration, *keySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.uri, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	req.Header.Set("User-Agent", "ztgate")
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return 0, nil, fmt.Errorf("HTTP status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return 0, nil, fmt.Errorf("read body: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return 0, nil, fmt.Errorf("JWKS larger than %d bytes", maxJWKSBytes)
	}
	ks, err := parseJWKS(body)
	if err != nil {
		return 0, nil, err
	}
	return maxAgeOf(resp.Header.Get("Cache-Control")), ks, nil
}

// maxAgeOf returns the max-age directive of a Cache-Control value, or 0.
func maxAgeOf(cc string) time.Duration {
	for _, d := range strings.Split(cc, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(d), "=")
		if !ok || !strings.EqualFold(k, "max-age") {
			continue
		}
		n, err := strconv.Atoi(strings.Trim(v, `"`))
		if err != nil || n <= 0 {
			return 0
		}
		return time.Duration(min(n, 86400)) * time.Second
	}
	return 0
}
