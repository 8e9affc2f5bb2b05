// Package gateway is ztgate's ingress: listeners (TLS over TCP for h1/h2,
// QUIC for h3, plain-HTTP redirects), routing, the request pipeline and
// the admin server. A config is compiled into an immutable Runtime that
// is swapped atomically on reload; sockets live outside it and survive
// reloads that keep their address.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"time"

	"sync/atomic"

	"github.com/ztgate/ztgate/configs"
)

// Certificates supplies listener TLS configs; gateway/certs.Manager
// implements it.
type Certificates interface {
	TLSConfig(listener string) (*tls.Config, error)
	HTTPChallengeHandler(next http.Handler) http.Handler
	Ready() error
}

// Deps are the long-lived things a Server needs.
type Deps struct {
	Logger  *slog.Logger
	Metrics *Metrics
	Certs   Certificates
	// AccessLog, when set, takes the access log lines (one per request,
	// with component=access) instead of Logger. Build it on a LineBuffer
	// so that lines leave in batches rather than one write(2) each.
	AccessLog *slog.Logger
	// Compile turns a config into the parts of a Runtime that other
	// packages own (upstream pools, authn, authz). Nil: routes with an
	// upstream answer 503.
	Extensions Extensions
}

// Server is the ingress gateway.
type Server struct {
	log  *slog.Logger
	alog *slog.Logger // access log
	m    *Metrics
	deps Deps

	rt atomic.Pointer[Runtime]

	mu      sync.Mutex // serialises Apply and Shutdown
	tcp     map[string]*tcpServer
	h3      map[string]*h3Server
	stopped bool
}

// New creates a server; Apply starts it on a config.
func New(deps Deps) (*Server, error) {
	if deps.Logger == nil || deps.Metrics == nil {
		return nil, errors.New("gateway: logger and metrics are required")
	}
	alog := deps.Logger
	if deps.AccessLog != nil {
		alog = deps.AccessLog
	}
	return &Server{
		log:  deps.Logger.With("component", "gateway"),
		alog: alog.With("component", "access"),
		m:    deps.Metrics,
		deps: deps,
		tcp:  map[string]*tcpServer{},
		h3:   map[string]*h3Server{},
	}, nil
}

// Runtime returns the snapshot in use.
func (s *Server) Runtime() *Runtime { return s.rt.Load() }

// acquire returns the current Runtime pinned for one request (nil when
// not serving). Call rt.done when the request ends.
func (s *Server) acquire() *Runtime {
	for {
		rt := s.rt.Load()
		if rt == nil || rt.acquire() {
			return rt
		}
	}
}

// Apply compiles cfg and, if that succeeds, opens any new sockets,
// publishes the new Runtime and retires the old one. On any error nothing
// changes: the old Runtime keeps serving.
func (s *Server) Apply(cfg *configs.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("gateway: stopped")
	}
	rt, err := Compile(cfg, s.deps)
	if err != nil {
		return err
	}
	// Open new sockets before touching anything that serves.
	opened, err := s.openSockets(cfg)
	if err != nil {
		for _, ts := range opened.tcp {
			ts.sock.close()
		}
		for _, hs := range opened.h3 {
			hs.close(context.Background())
		}
		rt.release()
		return err
	}
	for addr, ts := range opened.tcp {
		s.tcp[addr] = ts
	}
	for addr, hs := range opened.h3 {
		s.h3[addr] = hs
	}
	old := s.rt.Swap(rt)
	s.configureListeners(rt)
	s.closeRemoved(rt)
	if old != nil {
		old.retire()
	}
	return nil
}

type openedSockets struct {
	tcp map[string]*tcpServer
	h3  map[string]*h3Server
}

// rekey re-files sockets under the addresses cfg names them by: a
// socket opened for "127.0.0.1:0" is found again by its bound address.
func (s *Server) rekey(cfg *configs.Config) {
	for i := range cfg.Listeners {
		addr := cfg.Listeners[i].Address
		if _, ok := s.tcp[addr]; !ok {
			for k, ts := range s.tcp {
				if ts.sock.ln.Addr().String() == addr {
					delete(s.tcp, k)
					s.tcp[addr] = ts
					break
				}
			}
		}
		if _, ok := s.h3[addr]; !ok {
			for k, hs := range s.h3 {
				if hs.pc.LocalAddr().String() == addr {
					delete(s.h3, k)
					s.h3[addr] = hs
					break
				}
			}
		}
	}
}

func (s *Server) openSockets(cfg *configs.Config) (openedSockets, error) {
	o := openedSockets{tcp: map[string]*tcpServer{}, h3: map[string]*h3Server{}}
	s.rekey(cfg)
	for i := range cfg.Listeners {
		l := &cfg.Listeners[i]
		if _, ok := s.tcp[l.Address]; !ok {
			sock, err := listenTCP(l.Address, s.log, s.m)
			if err != nil {
				return o, fmt.Errorf("%s: listeners[%d].address: cannot listen on %s: %w", cfg.File, i, l.Address, err)
			}
			ts := &tcpServer{sock: sock}
			ts.stable = s.stableTLS(func() string { return *sock.name.Load() })
			o.tcp[l.Address] = ts
		}
		if hasProto(l, configs.ProtoH3) {
			if _, ok := s.h3[l.Address]; !ok {
				hs, err := s.listenH3(l.Address)
				if err != nil {
					return o, fmt.Errorf("%s: listeners[%d].address: cannot listen on udp %s for h3: %w", cfg.File, i, l.Address, err)
				}
				o.h3[l.Address] = hs
			}
		}
	}
	return o, nil
}

// configureListeners points every socket at rt's settings, replacing the
// http.Server only where its own settings changed.
func (s *Server) configureListeners(rt *Runtime) {
	for _, l := range rt.cfg.Listeners {
		ts := s.tcp[l.Address]
		lr := rt.listeners[l.Name]
		key := serverKey{Name: l.Name, Limits: l.Limits, Protocols: fmt.Sprint(l.Protocols), Redirect: l.RedirectHTTPS != nil}
		if ts.srv == nil || !reflect.DeepEqual(ts.key, key) {
			old, oldQ := ts.srv, ts.queue
			ts.queue = newConnQueue(ts.sock.ln.Addr())
			ts.srv = s.newHTTPServer(&l, lr)
			ts.key = key
			go ts.srv.Serve(ts.queue)
			ts.sock.configure(l.Name, ts.tlsFor(lr), l.Limits.MaxConnections, l.Limits.HandshakeTimeout, ts.queue)
			if old != nil {
				oldQ.Close()
				go s.drain(old, rt.cfg.ShutdownTimeout)
			}
		} else {
			ts.sock.configure(l.Name, ts.tlsFor(lr), l.Limits.MaxConnections, l.Limits.HandshakeTimeout, ts.queue)
		}
		if hs := s.h3[l.Address]; hs != nil {
			hs.name.Store(&l.Name)
		}
	}
}

// serverKey holds the listener settings baked into an http.Server.
type serverKey struct {
	Name      string
	Limits    configs.Limits
	Protocols string
	Redirect  bool
}

func (s *Server) closeRemoved(rt *Runtime) {
	inUse := map[string]bool{}
	h3InUse := map[string]bool{}
	for i := range rt.cfg.Listeners {
		l := &rt.cfg.Listeners[i]
		inUse[l.Address] = true
		if hasProto(l, configs.ProtoH3) {
			h3InUse[l.Address] = true
		}
	}
	for addr, ts := range s.tcp {
		if !inUse[addr] {
			delete(s.tcp, addr)
			ts.sock.close()
			ts.queue.Close()
			go s.drain(ts.srv, rt.cfg.ShutdownTimeout)
		}
	}
	for addr, hs := range s.h3 {
		if !h3InUse[addr] {
			delete(s.h3, addr)
			go hs.close(context.Background())
		}
	}
}

// drain shuts an http.Server down gracefully: idle connections close now,
// active requests get until timeout.
func (s *Server) drain(srv *http.Server, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		s.log.Warn("drain: connections still open at the deadline were closed", "error", err)
		srv.Close()
	}
}

// Shutdown stops accepting, lets in-flight requests finish until ctx is
// done, then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	var wg sync.WaitGroup
	var errs []error
	var emu sync.Mutex
	for _, ts := range s.tcp {
		ts.sock.close()
		ts.queue.Close()
		wg.Add(1)
		go func(srv *http.Server) {
			defer wg.Done()
			if err := srv.Shutdown(ctx); err != nil {
				srv.Close()
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		}(ts.srv)
	}
	for _, hs := range s.h3 {
		wg.Add(1)
		go func(hs *h3Server) {
			defer wg.Done()
			hs.close(ctx)
		}(hs)
	}
	wg.Wait()
	s.tcp, s.h3 = map[string]*tcpServer{}, map[string]*h3Server{}
	if rt := s.rt.Swap(nil); rt != nil {
		rt.retire()
	}
	return errors.Join(errs...)
}

// Addr returns the bound address of the TCP listener named name (useful
// with port 0 in tests).
func (s *Server) Addr(name string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := s.rt.Load()
	if rt == nil {
		return nil
	}
	lr, ok := rt.listeners[name]
	if !ok {
		return nil
	}
	for _, ts := range s.tcp {
		if n := ts.sock.name.Load(); n != nil && *n == lr.cfg.Name {
			return ts.sock.ln.Addr()
		}
	}
	return nil
}

// UDPAddr returns the bound UDP address of the h3 listener named name.
func (s *Server) UDPAddr(name string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := s.rt.Load()
	if rt == nil {
		return nil
	}
	lr, ok := rt.listeners[name]
	if !ok {
		return nil
	}
	for _, hs := range s.h3 {
		if n := hs.name.Load(); n != nil && *n == lr.cfg.Name {
			return hs.pc.LocalAddr()
		}
	}
	return nil
}

// tcpServer is a socket and the http.Server currently fed by it.
type tcpServer struct {
	sock   *tcpSocket
	stable *tls.Config // made once per socket, so ticket keys survive reloads
	srv    *http.Server
	queue  *connQueue
	key    serverKey
}

// tlsFor returns the socket's TLS config for a listener snapshot, or nil
// for a plain-HTTP listener.
func (ts *tcpServer) tlsFor(lr *listenerRuntime) *tls.Config {
	if lr.tls == nil {
		return nil
	}
	return ts.stable
}

// stableTLS returns a tls.Config that picks the current snapshot's
// listener config per handshake (GetConfigForClient), so a reload changes
// certificates and client-auth settings without a new socket.
func (s *Server) stableTLS(name func() string) *tls.Config {
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			rt := s.rt.Load()
			if rt == nil {
				return nil, errors.New("gateway: not serving")
			}
			lr, ok := rt.listeners[name()]
			if !ok || lr.tls == nil {
				return nil, errors.New("gateway: listener is closing")
			}
			// crypto/tls calls GetConfigForClient on the first config
			// only: chain into the listener's own hook (the certificate
			// manager answers ACME TLS-ALPN-01 and enforces min_version).
			if next := lr.tls.GetConfigForClient; next != nil {
				c, err := next(hello)
				if err != nil || c != nil {
					return c, err
				}
			}
			return lr.tls, nil
		},
	}
	return c
}

func (s *Server) newHTTPServer(l *configs.Listener, lr *listenerRuntime) *http.Server {
	var h http.Handler = &listenerHandler{s: s, name: l.Name}
	if l.RedirectHTTPS != nil {
		h = redirectHandler(l.RedirectHTTPS.Port)
		if s.deps.Certs != nil {
			h = s.deps.Certs.HTTPChallengeHandler(h)
		}
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.Limits.ReadHeaderTimeout,
		ReadTimeout:       l.Limits.ReadTimeout,
		WriteTimeout:      l.Limits.WriteTimeout,
		IdleTimeout:       l.Limits.IdleTimeout,
		MaxHeaderBytes:    l.Limits.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.With("listener", l.Name).Handler(), slog.LevelDebug),
	}
	var p http.Protocols
	if l.RedirectHTTPS != nil {
		p.SetHTTP1(true)
	} else {
		p.SetHTTP1(hasProto(l, configs.ProtoH1))
		p.SetHTTP2(hasProto(l, configs.ProtoH2))
		srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: l.Limits.MaxConcurrentStreams}
		// Serve() enables HTTP/2 on *tls.Conn only when TLSConfig
		// advertises h2; the handshake itself is done by tcpSocket.
		srv.TLSConfig = &tls.Config{NextProtos: lr.nextProtos}
	}
	srv.Protocols = &p
	return srv
}

func redirectHandler(port int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" || !validRedirectHost(host) {
			http.Error(w, "bad Host header", http.StatusBadRequest)
			return
		}
		if port != 443 {
			host = net.JoinHostPort(host, strconv.Itoa(port))
		} else if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
			host = "[" + host + "]"
		}
		target := "https://" + host + r.URL.RequestURI()
		w.Header().Set("Connection", "close")
		http.Redirect(w, r, target, http.StatusPermanentRedirect)
	})
}

// validRedirectHost refuses Host values that could turn the redirect into
// an open redirect or header injection.
func validRedirectHost(h string) bool {
	if len(h) > 255 {
		return false
	}
	for _, c := range h {
		if !(c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_' ||
			c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func hasProto(l *configs.Listener, p string) bool {
	for _, x := range l.Protocols {
		if x == p {
			return true
		}
	}
	return false
}
