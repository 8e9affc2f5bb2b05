package upstream

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/ztgate/ztgate/configs"
)

// Registry keeps pools across reloads. A pool whose upstream config (and
// the content of the files it names) is unchanged is reused by the next
// Set, with its health state and idle connections; a changed or removed
// one is retired when the last Set using it is released.
type Registry struct {
	deps Deps

	updating sync.Mutex // one Update at a time
	mu       sync.Mutex
	current  map[string]*entry // by upstream name: the newest Set's pools
	closed   bool
}

type entry struct {
	key  [32]byte
	pool *Pool
	refs int // Sets holding the pool (guarded by Registry.mu)
}

// NewRegistry creates an empty registry. deps.Metrics should be created
// once per process (NewMetrics).
func NewRegistry(deps Deps) *Registry {
	if deps.Metrics == nil {
		deps.Metrics, _ = NewMetrics(nil)
	}
	return &Registry{deps: deps, current: map[string]*entry{}}
}

// Set is the pools of one config snapshot, by upstream name. It is
// immutable; Release it when the snapshot is retired.
type Set struct {
	reg      *Registry
	pools    map[string]*Pool
	entries  []*entry
	released atomic.Bool
}

// Pool returns the pool of the named upstream.
func (s *Set) Pool(name string) (*Pool, bool) {
	p, ok := s.pools[name]
	return p, ok
}

// Names lists the upstreams of the set, sorted.
func (s *Set) Names() []string {
	out := make([]string, 0, len(s.pools))
	for n := range s.pools {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// HealthKnown reports whether every pool has finished its first round of
// active health checks (for /readyz).
func (s *Set) HealthKnown() bool {
	for _, p := range s.pools {
		if !p.HealthKnown() {
			return false
		}
	}
	return true
}

// Release gives the set's pools back. Pools no other Set holds are
// retired: they close once their in-flight requests finish. Calling
// Release more than once is harmless.
func (s *Set) Release() {
	if s == nil || !s.released.CompareAndSwap(false, true) {
		return
	}
	s.reg.mu.Lock()
	var retire []*Pool
	for _, e := range s.entries {
		e.refs--
		if e.refs == 0 {
			if cur, ok := s.reg.current[e.pool.name]; ok && cur == e {
				delete(s.reg.current, e.pool.name)
			}
			retire = append(retire, e.pool)
		}
	}
	s.reg.mu.Unlock()
	for _, p := range retire {
		p.retire()
	}
}

// poolKey identifies an upstream config, including the bytes of the
// files it names, so that a reload after a certificate file changed
// builds a new pool.
func poolKey(u *configs.Upstream) ([32]byte, error) {
	h := sha256.New()
	b, err := json.Marshal(u)
	if err != nil {
		return [32]byte{}, err
	}
	h.Write(b)
	if t := u.TLS; t != nil {
		for _, f := range []string{t.CAFile, t.ClientCert, t.ClientKey} {
			if f == "" {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				return [32]byte{}, err
			}
			h.Write([]byte{0})
			h.Write(data)
		}
	}
	var k [32]byte
	h.Sum(k[:0])
	return k, nil
}

// Update builds the Set for a new config: unchanged upstreams reuse their
// pool, others get a new one. On error nothing changes (pools built by
// this call are closed) and the previous Sets keep serving. The caller
// publishes the new Set, then Releases the previous one.
func (r *Registry) Update(ups []configs.Upstream) (*Set, error) {
	type plan struct {
		cfg   configs.Upstream
		key   [32]byte
		reuse *entry
	}
	r.updating.Lock()
	defer r.updating.Unlock()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errors.New("upstream registry is closed")
	}
	plans := make([]plan, 0, len(ups))
	var errs []error
	for i := range ups {
		k, err := poolKey(&ups[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("upstream %q: %w", ups[i].Name, err))
			continue
		}
		pl := plan{cfg: ups[i], key: k}
		if cur, ok := r.current[ups[i].Name]; ok && cur.key == k {
			pl.reuse = cur
		}
		plans = append(plans, pl)
	}
	r.mu.Unlock()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Build new pools outside the lock (reading files, starting checks).
	built := make([]*Pool, len(plans))
	for i, pl := range plans {
		if pl.reuse != nil {
			continue
		}
		p, err := New(pl.cfg, r.deps)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		built[i] = p
	}
	if len(errs) > 0 {
		for _, p := range built {
			if p != nil {
				p.Close()
			}
		}
		return nil, errors.Join(errs...)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	s := &Set{reg: r, pools: make(map[string]*Pool, len(plans))}
	next := make(map[string]*entry, len(plans))
	for i, pl := range plans {
		e := pl.reuse
		if e != nil && (e.refs == 0 || r.current[pl.cfg.Name] != e) {
			e = nil // retired meanwhile: cannot be revived
		}
		if e == nil {
			p := built[i]
			if p == nil {
				var err error
				if p, err = New(pl.cfg, r.deps); err != nil {
					// only on a race with Release; keep the old state
					for _, b := range built {
						if b != nil {
							b.Close()
						}
					}
					return nil, err
				}
			}
			e = &entry{key: pl.key, pool: p}
		} else if built[i] != nil {
			built[i].Close()
		}
		e.refs++
		s.entries = append(s.entries, e)
		s.pools[pl.cfg.Name] = e.pool
		next[pl.cfg.Name] = e
	}
	// Endpoints that disappear lose their gauge series; the new current
	// pools own the rest.
	for name, old := range r.current {
		old.pool.current.Store(false)
		ne, keep := next[name]
		for _, ep := range old.pool.eps {
			if !keep || !ne.pool.hasEndpoint(ep.addr) {
				r.deps.Metrics.healthy.DeleteLabelValues(name, ep.addr)
			}
		}
	}
	for _, e := range next {
		e.pool.current.Store(true)
		e.pool.publishAll()
	}
	r.current = next
	return s, nil
}

func (p *Pool) hasEndpoint(addr string) bool {
	for _, e := range p.eps {
		if e.addr == addr {
			return true
		}
	}
	return false
}

// Close closes every pool the registry knows, for shutdown. Sets still
// held stay usable (requests open new connections) but get no health
// checks.
func (r *Registry) Close() {
	r.mu.Lock()
	r.closed = true
	cur := r.current
	r.current = map[string]*entry{}
	r.mu.Unlock()
	for _, e := range cur {
		e.pool.Close()
	}
}

// StatusHandler serves the pools of the newest Set as JSON, for the admin
// server: upstream → endpoints with healthy, ejected and outstanding.
func (r *Registry) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		type up struct {
			Name          string           `json:"name"`
			LoadBalancing string           `json:"load_balancing"`
			HealthKnown   bool             `json:"health_known"`
			Endpoints     []EndpointStatus `json:"endpoints"`
		}
		r.mu.Lock()
		out := make([]up, 0, len(r.current))
		for name, e := range r.current {
			out = append(out, up{Name: name, LoadBalancing: e.pool.lb.String(), HealthKnown: e.pool.HealthKnown(), Endpoints: e.pool.Endpoints()})
		}
		r.mu.Unlock()
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"upstreams": out})
	})
}

// Check does what Update would refuse an upstream for, without starting
// anything: for `ztgate validate`. It reads the TLS files (CA bundle,
// client key pair). SPIFFE upstreams are not checked here (their
// tls.Config comes from the SVID source at run time).
func Check(ups []configs.Upstream) error {
	var errs []error
	for i := range ups {
		u := &ups[i]
		if u.TLS == nil || u.TLS.SPIFFE() {
			continue
		}
		if _, err := clientTLS(u, Deps{}); err != nil {
			errs = append(errs, fmt.Errorf("upstream %q: %w", u.Name, err))
		}
	}
	return errors.Join(errs...)
}
