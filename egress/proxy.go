package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/configs"
)

// Proxy is the egress proxy. Create it with New, open its listeners with
// Start, reload with Apply and stop with Shutdown.
type Proxy struct {
	log    *slog.Logger
	m      *metrics
	deps   Deps
	rt     atomic.Pointer[snapshot]
	denied *topDenied
	nextID atomic.Uint64

	mu        sync.Mutex // guards the fields below
	started   bool
	closing   bool
	listeners map[string]*listener // by listenerKey
	conns     map[*conn]struct{}
	total     int
	perSource map[netip.Addr]int
	wg        sync.WaitGroup // accept loops and connections
}

// listener is one open socket. It survives reloads that keep its address.
type listener struct {
	key string // listenerKey
	ln  net.Listener
}

// conn is one tracked client connection.
type conn struct {
	client  net.Conn
	mu      sync.Mutex
	closers []io.Closer
}

func (c *conn) addCloser(x io.Closer) {
	c.mu.Lock()
	c.closers = append(c.closers, x)
	c.mu.Unlock()
}

func (c *conn) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.client.Close()
	for _, x := range c.closers {
		x.Close()
	}
}

// New compiles cfg.Egress and returns a Proxy that has not opened its
// listeners yet. It fails on any config problem (e.g. unreadable mTLS
// files, require_dns_guard without a ResolvedChecker).
func New(cfg *configs.Config, deps Deps) (*Proxy, error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Metrics == nil {
		deps.Metrics = prometheus.NewRegistry()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	rt, err := compile(cfg, &deps)
	if err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, fmt.Errorf("egress: metrics: %w", err)
	}
	rt.bind(m)
	p := &Proxy{
		log:       deps.Logger.With("component", "egress"),
		m:         m,
		deps:      deps,
		denied:    newTopDenied(1000),
		listeners: map[string]*listener{},
		conns:     map[*conn]struct{}{},
		perSource: map[netip.Addr]int{},
	}
	p.rt.Store(rt)
	return p, nil
}

func (p *Proxy) now() time.Time { return p.deps.Now() }

// Start opens the configured listeners and returns once all are
// listening. If one cannot be opened, those already opened are closed.
func (p *Proxy) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return errors.New("egress: already started")
	}
	if err := p.openLocked(p.rt.Load()); err != nil {
		return err
	}
	p.started = true
	return nil
}

// openLocked opens every listener of rt that is not open yet; on error it
// closes the ones it opened.
func (p *Proxy) openLocked(rt *snapshot) error {
	var opened []*listener
	for key, lr := range rt.listeners {
		if _, ok := p.listeners[key]; ok {
			continue
		}
		ln, err := listenConfig.Listen(context.Background(), "tcp", lr.address)
		if err != nil {
			for _, l := range opened {
				l.ln.Close()
			}
			return fmt.Errorf("egress: listener %q: %w", lr.name, err)
		}
		opened = append(opened, &listener{key: key, ln: ln})
	}
	for _, l := range opened {
		p.listeners[l.key] = l
		p.wg.Add(1)
		go p.serve(l)
	}
	return nil
}

// listenConfig sets TCP keep-alive once, on the listening socket: Linux
// copies the options to every accepted socket, so Accept (KeepAlive -1)
// does not set them again for each connection. The values are Go's
// defaults for accepted connections.
var listenConfig = net.ListenConfig{KeepAlive: -1, Control: setListenerOptions}

func setListenerOptions(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		for _, o := range [...]struct{ level, name, value int }{
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
		} {
			if serr = unix.SetsockoptInt(int(fd), o.level, o.name, o.value); serr != nil {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// Addr returns the bound address of the listener named name (useful when
// the config says port 0), or nil.
func (p *Proxy) Addr(name string) net.Addr {
	rt := p.rt.Load()
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, lr := range rt.listeners {
		if lr.name == name {
			if l, ok := p.listeners[addr]; ok {
				return l.ln.Addr()
			}
		}
	}
	return nil
}

// Apply compiles cfg fully, then swaps it in atomically. On any error the
// old config keeps serving. Listeners whose address is unchanged keep
// their sockets; new ones are opened before removed ones are closed.
// Connections in flight finish on the config they started with.
func (p *Proxy) Apply(cfg *configs.Config) error {
	rt, err := compile(cfg, &p.deps)
	if err != nil {
		p.m.reloads.WithLabelValues("failure").Inc()
		return fmt.Errorf("egress: %w", err)
	}
	rt.bind(p.m)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return errors.New("egress: shutting down")
	}
	if p.started {
		if err := p.openLocked(rt); err != nil {
			p.m.reloads.WithLabelValues("failure").Inc()
			return err
		}
	}
	p.rt.Store(rt)
	for addr, l := range p.listeners {
		if _, keep := rt.listeners[addr]; !keep {
			l.ln.Close()
			delete(p.listeners, addr)
		}
	}
	p.m.reloads.WithLabelValues("success").Inc()
	return nil
}

// Shutdown closes the listeners, waits for connections to finish until
// ctx is done, then closes the rest and returns ctx's error.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	for addr, l := range p.listeners {
		l.ln.Close()
		delete(p.listeners, addr)
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	for c := range p.conns {
		c.closeAll()
	}
	p.mu.Unlock()
	<-done
	return ctx.Err()
}

func (p *Proxy) activeCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

func (p *Proxy) serve(l *listener) {
	defer p.wg.Done()
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			p.log.Warn("egress accept", FieldError, err.Error())
			time.Sleep(delay)
			continue
		}
		delay = 0
		p.wg.Add(1)
		go p.handle(l.key, c)
	}
}

// admit counts the connection against the global and per-source caps.
func (p *Proxy) admit(c *conn, src netip.Addr, lim configs.EgressLimits) Reason {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closing:
		return ReasonShuttingDown
	case p.total >= lim.MaxConnections:
		return ReasonConnLimit
	case p.perSource[src] >= lim.MaxConnectionsPerSource:
		return ReasonSourceLimit
	}
	p.total++
	p.perSource[src]++
	p.conns[c] = struct{}{}
	return ""
}

func (p *Proxy) release(c *conn, src netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total--
	if p.perSource[src]--; p.perSource[src] <= 0 {
		delete(p.perSource, src)
	}
	delete(p.conns, c)
}

// handle runs one client connection on the runtime current at accept.
func (p *Proxy) handle(key string, nc net.Conn) {
	defer p.wg.Done()
	rt := p.rt.Load()
	lr := rt.listeners[key]
	if lr == nil { // the listener is being removed by a reload
		nc.Close()
		return
	}
	src := addrPortOf(nc.RemoteAddr())
	rec := &record{id: p.nextID.Add(1), listener: lr, start: p.now(), src: src}
	c := &conn{client: nc}
	if reason := p.admit(c, src.Addr(), rt.lim); reason != "" {
		rec.dec = decision{reason: reason}
		p.logDecision(rec)
		p.logClose(rec)
		nc.Close()
		return
	}
	lr.m.active.Inc()
	defer func() {
		c.closeAll()
		p.release(c, src.Addr())
		lr.m.active.Dec()
		if !rec.decided {
			// Every path decides; this is the fail-closed backstop.
			rec.dec = decision{reason: ReasonBadRequest}
			p.logDecision(rec)
		}
		p.logClose(rec)
	}()
	switch lr.mode {
	case ModeConnect, ModeHTTP:
		p.handleProxyRequest(rt, lr, c, rec)
	case ModeTransparent:
		p.handleTransparent(rt, c, rec)
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
