package gateway

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/gateway/upstream"
)

// Runtime is one compiled config. It is never written after Compile
// returns; requests load it once and keep it to the end.
type Runtime struct {
	cfg       *configs.Config
	router    *Router
	listeners map[string]*listenerRuntime
	ext       *Extension

	// In-flight accounting: a retired Runtime releases what it holds
	// (policy engines, upstream pools) only when its last request ends.
	inflight    atomic.Int64
	retired     atomic.Bool
	released    atomic.Bool
	releaseOnce sync.Once
}

// acquire pins rt for one request; false if rt was already released
// (the caller loads the current Runtime again).
func (rt *Runtime) acquire() bool {
	rt.inflight.Add(1)
	if rt.released.Load() {
		rt.inflight.Add(-1)
		return false
	}
	return true
}

// done ends a request begun with acquire.
func (rt *Runtime) done() {
	if rt.inflight.Add(-1) == 0 && rt.retired.Load() {
		rt.release()
	}
}

// retire marks rt as replaced; it is released now if idle, else by the
// last request's done.
func (rt *Runtime) retire() {
	rt.retired.Store(true)
	if rt.inflight.Load() == 0 {
		rt.release()
	}
}

// Config returns the config this Runtime was compiled from.
func (rt *Runtime) Config() *configs.Config { return rt.cfg }

// listenerRuntime is a listener's per-snapshot settings.
type listenerRuntime struct {
	cfg        *configs.Listener
	trusted    []netip.Prefix
	altSvc     string
	nextProtos []string
	tls        *tls.Config // served via GetConfigForClient

	routes  map[*route]*routeRuntime // the routes this listener serves
	noRoute *routeMetrics            // requests that matched no route ("-")
}

// routeRuntime is a route's compiled pipeline on one listener, with its
// metric series bound once, so a request hashes no label values.
type routeRuntime struct {
	stages          []Stage
	requestHeaders  *upstream.HeaderOps
	responseHeaders *upstream.HeaderOps
	metrics         *routeMetrics
}

// Extension holds the parts of a snapshot that other packages compile:
// authentication and authorization stages and the upstream forwarder.
type Extension struct {
	// Stages returns a route's checks in the fixed order ip → authn →
	// authz. It is called once per route and listener at compile time.
	Stages func(l *configs.Listener, r *configs.Route) ([]Stage, error)
	// Forward sends the request to the route's upstream.
	Forward func(w http.ResponseWriter, req *Request) error
	// ConfigureTLS adjusts a listener's per-snapshot TLS config (client
	// certificate verification for peer authentication).
	ConfigureTLS func(l *configs.Listener, c *tls.Config) error
	// Ready reports what is not ready yet (JWKS, upstream health).
	Ready func() error
	// Release is called once the snapshot is retired.
	Release func()
}

// Extensions compiles the Extension for a config. Deps.Extensions.
type Extensions func(cfg *configs.Config) (*Extension, error)

// Compile turns a validated config into a Runtime without touching any
// socket. `ztgate validate` runs exactly this.
func Compile(cfg *configs.Config, deps Deps) (rt *Runtime, err error) {
	rt = &Runtime{cfg: cfg, listeners: map[string]*listenerRuntime{}}
	if deps.Extensions != nil {
		rt.ext, err = deps.Extensions(cfg)
		if err != nil {
			return nil, err
		}
	} else {
		rt.ext = &Extension{}
	}
	defer func() {
		if err != nil {
			rt.release()
		}
	}()
	if rt.router, err = compileRouter(cfg); err != nil {
		return nil, err
	}
	for i := range cfg.Listeners {
		l := &cfg.Listeners[i]
		lr, err := compileListener(cfg, i, deps, rt.ext)
		if err != nil {
			return nil, err
		}
		rt.listeners[l.Name] = lr
	}
	for _, r := range rt.router.all {
		reqHeaders, err := upstream.CompileHeaderOps(r.cfg.RequestHeaders)
		if err != nil {
			return nil, fmt.Errorf("%s: routes[%d].request_headers: %w", cfg.File, r.index, err)
		}
		resHeaders, err := upstream.CompileHeaderOps(r.cfg.ResponseHeaders)
		if err != nil {
			return nil, fmt.Errorf("%s: routes[%d].response_headers: %w", cfg.File, r.index, err)
		}
		// Stages depend on the listener only through policies attached
		// to it; compile per listener the route serves.
		for i := range cfg.Listeners {
			l := &cfg.Listeners[i]
			if r.listeners != nil && !r.listeners[l.Name] {
				continue
			}
			rr := &routeRuntime{requestHeaders: reqHeaders, responseHeaders: resHeaders,
				metrics: newRouteMetrics(deps.Metrics, l.Name, r.name)}
			if rt.ext.Stages != nil {
				if rr.stages, err = rt.ext.Stages(l, r.cfg); err != nil {
					return nil, fmt.Errorf("%s: routes[%d] (%s): %w", cfg.File, r.index, r.name, err)
				}
			}
			rt.listeners[l.Name].routes[r] = rr
		}
	}
	return rt, nil
}

func compileListener(cfg *configs.Config, i int, deps Deps, ext *Extension) (*listenerRuntime, error) {
	l := &cfg.Listeners[i]
	lr := &listenerRuntime{cfg: l, routes: map[*route]*routeRuntime{}, noRoute: newRouteMetrics(deps.Metrics, l.Name, "-")}
	for _, p := range l.TrustedProxies {
		pfx, err := configs.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("%s: listeners[%d].trusted_proxies: %w", cfg.File, i, err)
		}
		lr.trusted = append(lr.trusted, pfx)
	}
	if l.RedirectHTTPS != nil {
		return lr, nil
	}
	if hasProto(l, configs.ProtoH2) {
		lr.nextProtos = append(lr.nextProtos, "h2")
	}
	if hasProto(l, configs.ProtoH1) {
		lr.nextProtos = append(lr.nextProtos, "http/1.1")
	}
	if hasProto(l, configs.ProtoH3) {
		_, port, _ := net.SplitHostPort(l.Address)
		if port != "" && port != "0" {
			lr.altSvc = fmt.Sprintf(`h3=":%s"; ma=86400`, port)
		}
	}
	if deps.Certs == nil {
		return nil, fmt.Errorf("%s: listeners[%d]: no certificate manager", cfg.File, i)
	}
	base, err := deps.Certs.TLSConfig(l.Name)
	if err != nil {
		return nil, fmt.Errorf("%s: listeners[%d].tls: %w", cfg.File, i, err)
	}
	tc := base.Clone()
	tc.NextProtos = append([]string(nil), lr.nextProtos...)
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	if ext.ConfigureTLS != nil {
		if err := ext.ConfigureTLS(l, tc); err != nil {
			return nil, fmt.Errorf("%s: listeners[%d].peer_authentication: %w", cfg.File, i, err)
		}
	}
	lr.tls = tc
	return lr, nil
}

func (rt *Runtime) release() {
	rt.releaseOnce.Do(func() {
		rt.released.Store(true)
		if rt.ext != nil && rt.ext.Release != nil {
			rt.ext.Release()
		}
	})
}

// Ready reports what this snapshot still waits for.
func (rt *Runtime) Ready() error {
	if rt.ext != nil && rt.ext.Ready != nil {
		return rt.ext.Ready()
	}
	return nil
}
