package dnsguard

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/dnsguard/cache"
	"github.com/ztgate/ztgate/dnsguard/tunnel"
)

// Deps are the process-lifetime collaborators of a Server.
type Deps struct {
	Logger  *slog.Logger
	Metrics prometheus.Registerer // nil: a private registry
	// DialTLS opens DNS-over-TLS connections; needed only for upstreams
	// with protocol tls. cmd/ztgate passes (&dot.Dialer{}).Dial.
	DialTLS DialTLSFunc
	// Now is the clock; nil means time.Now. Tests use it to age entries.
	Now func() time.Time
}

// Errors returned by Resolve.
var (
	ErrBlocked  = errors.New("dnsguard: name blocked by policy")
	ErrNXDomain = errors.New("dnsguard: no such name")
	ErrNoAnswer = errors.New("dnsguard: no addresses for name")
	ErrUpstream = errors.New("dnsguard: upstream resolvers failed")
	ErrDisabled = errors.New("dnsguard: dns section has no listen address (dnsguard is off)")
)

// runtime is one compiled dns: section. Immutable once published.
type runtime struct {
	listen      []string
	upstreams   []*upstream
	timeout     time.Duration
	attempts    int
	udpSize     int
	ecsPass     bool
	blockRcode  int
	cacheOn     bool
	minTTL      uint32
	maxTTL      uint32
	negTTL      uint32
	serveStale  bool
	staleFor    time.Duration
	policy      *policy
	profile     *tunnel.Profile
	qps         float64
	burst       int
	grace       time.Duration
	cacheMax    int
	trackMax    int
	resolvedMax int
	limiterMax  int
}

// Server is the DNS proxy. Create it with New, then Start.
type Server struct {
	deps     Deps
	log      *slog.Logger
	m        *metrics
	now      func() time.Time
	rt       atomic.Pointer[runtime]
	cache    *cache.Cache
	tracker  *tunnel.Tracker
	limiter  *limiter
	resolved *resolvedTable
	admin    *adminState

	healthMu sync.Mutex
	health   map[string]*health // upstream health by protocol, address and server name; survives reloads

	mu        sync.Mutex
	listeners map[string]*listener
	started   bool
	closed    bool

	// exchangeHook replaces upstream exchanges in tests that need
	// millions of answers faster than a socket can give them.
	exchangeHook func(q *dns.Msg) (*dns.Msg, error)
}

// New compiles cfg.DNS and returns a Server that is not yet listening.
func New(cfg *configs.Config, deps Deps) (*Server, error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Metrics == nil {
		deps.Metrics = prometheus.NewRegistry()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	s := &Server{deps: deps, log: deps.Logger.With("component", "dnsguard"), now: deps.Now,
		listeners: map[string]*listener{}, admin: newAdminState(), health: map[string]*health{}}
	rt, err := s.compile(cfg)
	if err != nil {
		return nil, err
	}
	s.cache = cache.New(max(rt.cacheMax, 1))
	s.tracker = tunnel.NewTracker(rt.trackMax)
	s.limiter = newLimiter(rt.limiterMax)
	s.resolved = newResolvedTable(rt.resolvedMax)
	if s.m, err = newMetrics(deps.Metrics, s); err != nil {
		return nil, fmt.Errorf("dnsguard: metrics: %w", err)
	}
	s.rt.Store(rt)
	return s, nil
}

func (s *Server) compile(cfg *configs.Config) (*runtime, error) {
	if cfg == nil || !cfg.DNS.Enabled() {
		return nil, ErrDisabled
	}
	d := cfg.DNS
	// configs.Parse has defaulted and validated d; these checks keep a
	// hand-built Config from producing a runtime that cannot work.
	if d.Timeout <= 0 || d.Attempts < 1 || d.UDPSize < 512 || d.UDPSize > 65535 || d.Tunneling.MaxTracked < 1 ||
		d.Resolved.MaxEntries < 1 || d.RateLimit.MaxClients < 1 {
		return nil, errors.New("dnsguard: dns section is not defaulted (load it through configs.Parse or configs.Load)")
	}
	rt := &runtime{
		listen: append([]string(nil), d.Listen...), timeout: d.Timeout, attempts: d.Attempts,
		udpSize: d.UDPSize, ecsPass: d.ECS == "pass", blockRcode: dns.RcodeNameError,
		cacheOn: d.Cache.MaxEntries > 0, minTTL: secs(d.Cache.MinTTL), maxTTL: secs(d.Cache.MaxTTL),
		negTTL: secs(d.Cache.NegativeTTL), serveStale: d.Cache.ServeStale, staleFor: d.Cache.StaleFor,
		qps: d.RateLimit.QPS, burst: d.RateLimit.Burst, grace: d.Resolved.Grace,
		cacheMax: d.Cache.MaxEntries, trackMax: d.Tunneling.MaxTracked,
		resolvedMax: d.Resolved.MaxEntries, limiterMax: d.RateLimit.MaxClients,
	}
	if d.BlockResponse == "REFUSED" {
		rt.blockRcode = dns.RcodeRefused
	}
	if !rt.serveStale {
		rt.staleFor = 0
	}
	var err error
	if rt.upstreams, err = compileUpstreams(d.Upstreams, s.deps.DialTLS, s.healthOf); err != nil {
		return nil, fmt.Errorf("dnsguard: %w", err)
	}
	if rt.policy, err = compilePolicy(d.Groups); err != nil {
		return nil, fmt.Errorf("dnsguard: %w", err)
	}
	if rt.profile, err = tunnel.NewProfile(d.Tunneling); err != nil {
		return nil, fmt.Errorf("dnsguard: %w", err)
	}
	return rt, nil
}

// healthOf returns the shared health record of an upstream. Records of
// upstreams no longer configured stay (a few bytes each; bounded by the
// number of distinct upstreams ever configured).
func (s *Server) healthOf(key string) *health {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	h, ok := s.health[key]
	if !ok {
		h = &health{}
		s.health[key] = h
	}
	return h
}

func secs(d time.Duration) uint32 {
	return uint32(min(max(d/time.Second, 0), 1<<31-1))
}

// Start opens UDP and TCP sockets on every listen address and returns
// once all of them are serving.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("dnsguard: already started")
	}
	rt := s.rt.Load()
	opened := map[string]*listener{}
	for _, a := range rt.listen {
		l, err := s.openListener(a)
		if err != nil {
			for _, o := range opened {
				o.close(context.Background())
			}
			return err
		}
		opened[a] = l
	}
	s.listeners = opened
	s.started = true
	return nil
}

// Addrs returns the bound UDP addresses (port 0 resolved), in listen order.
func (s *Server) Addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, a := range s.rt.Load().listen {
		if l, ok := s.listeners[a]; ok {
			out = append(out, l.pc.LocalAddr().String())
		}
	}
	return out
}

// Apply compiles cfg and swaps it in atomically. On any error the running
// config stays. The cache, detector state, rate-limit buckets and the
// resolved-address table survive. A new listen address is opened before
// a removed one is closed.
func (s *Server) Apply(cfg *configs.Config) error {
	rt, err := s.compile(cfg)
	if err != nil {
		s.m.reloads.WithLabelValues("error").Inc()
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var added map[string]*listener
	if s.started {
		added = map[string]*listener{}
		for _, a := range rt.listen {
			if _, ok := s.listeners[a]; ok {
				continue
			}
			l, err := s.openListener(a)
			if err != nil {
				for _, o := range added {
					o.close(context.Background())
				}
				s.m.reloads.WithLabelValues("error").Inc()
				return err
			}
			added[a] = l
		}
	}
	s.cache.SetCap(max(rt.cacheMax, 1))
	s.tracker.SetCap(rt.trackMax)
	s.limiter.setCap(rt.limiterMax)
	s.resolved.setCap(rt.resolvedMax)
	s.rt.Store(rt)
	if s.started {
		keep := map[string]bool{}
		for _, a := range rt.listen {
			keep[a] = true
		}
		for a, l := range s.listeners {
			if !keep[a] {
				l.close(context.Background())
				delete(s.listeners, a)
			}
		}
		for a, l := range added {
			s.listeners[a] = l
		}
	}
	s.m.reloads.WithLabelValues("ok").Inc()
	return nil
}

// Shutdown stops every listener, letting in-flight queries finish until
// ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for a, l := range s.listeners {
		if err := l.close(ctx); err != nil {
			errs = append(errs, err)
		}
		delete(s.listeners, a)
	}
	s.closed = true
	return errors.Join(errs...)
}

// listener is one address served over UDP and TCP.
type listener struct {
	addr     string
	pc       net.PacketConn
	ln       net.Listener
	udp, tcp *dns.Server
}

const (
	readTimeout   = 5 * time.Second
	writeTimeout  = 5 * time.Second
	tcpIdle       = 10 * time.Second
	maxTCPQueries = 1000
)

func (s *Server) openListener(addr string) (*listener, error) {
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for try := 0; try < 10; try++ {
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return nil, fmt.Errorf("dnsguard: listen udp %s: %w", addr, err)
		}
		tcpAddr := addr
		if _, port, _ := net.SplitHostPort(addr); port == "0" {
			tcpAddr = pc.LocalAddr().String()
		}
		if ln, err = net.Listen("tcp", tcpAddr); err == nil {
			break
		}
		pc.Close()
		if _, port, _ := net.SplitHostPort(addr); port != "0" {
			return nil, fmt.Errorf("dnsguard: listen tcp %s: %w", addr, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("dnsguard: listen tcp %s: %w", addr, err)
	}
	l := &listener{addr: addr, pc: pc, ln: ln}
	idle := func() time.Duration { return tcpIdle }
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	l.udp = &dns.Server{PacketConn: pc, Handler: handler{s}, ReadTimeout: readTimeout, WriteTimeout: writeTimeout,
		NotifyStartedFunc: notify, UDPSize: 4096}
	l.tcp = &dns.Server{Listener: ln, Handler: handler{s}, ReadTimeout: readTimeout, WriteTimeout: writeTimeout,
		IdleTimeout: idle, MaxTCPQueries: maxTCPQueries, NotifyStartedFunc: notify}
	errc := make(chan error, 2)
	go func() { errc <- l.udp.ActivateAndServe() }()
	go func() { errc <- l.tcp.ActivateAndServe() }()
	for i := 0; i < 2; i++ {
		select {
		case <-started:
		case err := <-errc:
			l.close(context.Background())
			return nil, fmt.Errorf("dnsguard: serve %s: %w", addr, err)
		}
	}
	s.log.Info("dns listening", LogAddress, pc.LocalAddr().String())
	return l, nil
}

func (l *listener) close(ctx context.Context) error {
	e1 := l.udp.ShutdownContext(ctx)
	e2 := l.tcp.ShutdownContext(ctx)
	l.pc.Close()
	l.ln.Close()
	if errors.Is(e1, context.DeadlineExceeded) || errors.Is(e2, context.DeadlineExceeded) {
		return fmt.Errorf("dnsguard: shutdown %s: %w", l.addr, ctx.Err())
	}
	return nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1232); return &b }}

// handler adapts Server to miekg's dns.Handler without putting miekg
// types in dnsguard's exported API.
type handler struct{ s *Server }

var _ dns.Handler = handler{}

// ServeDNS answers one query from a listener.
func (h handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	s := h.s
	client := addrOf(w.RemoteAddr())
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	bp := bufPool.Get().(*[]byte)
	out := s.answer(context.Background(), client, tcp, req, *bp)
	if out.wire != nil {
		w.Write(out.wire)
	}
	if cap(out.wire) <= 4096 {
		*bp = out.wire[:0]
	}
	bufPool.Put(bp)
}

func addrOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return v.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// outcome is the answer to one query.
type outcome struct {
	wire   []byte // the response to send; nil sends nothing
	addrs  []netip.Addr
	rcode  int
	reason string
}

// answer runs a query through the fixed chain: sanity → rate limit →
// policy lists → refused types → tunnel detector → cache → upstream.
// Policy and detection come before the cache so a cached answer is never
// a way around them; detection before the upstream so a tunnel's bytes
// stop here.
func (s *Server) answer(ctx context.Context, client netip.Addr, tcp bool, req *dns.Msg, buf []byte) outcome {
	rt := s.rt.Load()
	now := s.now()
	if req.Response || len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		rc := dns.RcodeFormatError
		if req.Opcode != dns.OpcodeQuery && !req.Response {
			rc = dns.RcodeNotImplemented
		}
		s.m.queries.WithLabelValues(DecisionRefuse, ReasonMalformed).Inc()
		if req.Response {
			return outcome{rcode: rc, reason: ReasonMalformed} // never answer a response
		}
		return s.errorReply(rt, req, nil, rc, ReasonMalformed)
	}
	q := req.Question[0]
	opt := req.IsEdns0()
	if opt != nil && opt.Version() != 0 {
		s.m.queries.WithLabelValues(DecisionRefuse, ReasonMalformed).Inc()
		return s.errorReply(rt, req, opt, dns.RcodeBadVers, ReasonMalformed)
	}
	if q.Qclass != dns.ClassINET {
		s.m.queries.WithLabelValues(DecisionRefuse, ReasonQType).Inc()
		return s.errorReply(rt, req, opt, dns.RcodeRefused, ReasonQType)
	}
	if !s.limiter.allow(client, now, rt.qps, rt.burst) {
		s.m.queries.WithLabelValues(DecisionRefuse, ReasonRateLimit).Inc()
		s.debug("dns query refused", client, q, DecisionRefuse, ReasonRateLimit)
		return s.errorReply(rt, req, opt, dns.RcodeRefused, ReasonRateLimit)
	}
	name := strings.ToLower(strings.TrimSuffix(q.Name, "."))
	if name == "" {
		name = "."
	}
	groupName := ""
	if len(rt.policy.groups) > 0 {
		g := rt.policy.groupFor(client)
		if g == nil {
			return s.block(rt, req, opt, client, q, "", ReasonNoGroup, dns.RcodeRefused)
		}
		groupName = g.name
		if reason := g.decide(name); reason != "" {
			return s.block(rt, req, opt, client, q, groupName, reason, rt.blockRcode)
		}
	}
	detect := rt.profile.Mode != tunnel.ModeOff && !rt.profile.Exempt(name)
	maxSize := 512
	switch {
	case tcp:
		maxSize = dns.MaxMsgSize
	case opt != nil:
		maxSize = max(512, min(int(opt.UDPSize()), rt.udpSize))
	}
	do := opt != nil && opt.Do()
	key := cache.Key{Name: name, Type: q.Qtype, Class: q.Qclass, DO: do, CD: req.CheckingDisabled}
	var stale *cache.Entry
	if rt.cacheOn {
		if e, fresh := s.cache.Get(key, now, rt.staleFor); e != nil {
			if fresh {
				// A cache hit sends nothing upstream, so it carries no
				// new bits out: the detector does not score it, but a
				// quarantined pair stays blocked even for cached names.
				if detect {
					dom := e.Domain
					if dom == "" { // cached while detection was off
						f := tunnel.Extract(q.Name, q.Qtype)
						dom = f.Domain
					}
					if s.tracker.Quarantined(now, client, dom) {
						if out, blocked := s.quarantined(rt, req, opt, client, q, name); blocked {
							return out
						}
					}
				}
				s.m.allowCache.Inc()
				return s.fromEntry(rt, req, opt, client, name, q, e, now, false, maxSize, buf, ReasonCache)
			}
			stale = e
		}
	}
	// The detector sees refused query types too: a client sending NULL
	// queries full of encoded data is the clearest tunnel signal, and its
	// quarantine then also covers the fallback types it tries next.
	var domain string
	if detect {
		f := tunnel.Extract(q.Name, q.Qtype)
		domain = f.Domain
		v := s.tracker.Observe(now, rt.profile, client, &f)
		if v.Alert != nil {
			s.alert(v.Alert)
		}
		if v.Quarantined {
			if out, blocked := s.quarantined(rt, req, opt, client, q, name); blocked {
				return out
			}
		} else if v.Block {
			return s.block(rt, req, opt, client, q, groupName, ReasonTunnel, rt.blockRcode)
		} else if v.WouldBlock {
			s.m.wouldBlock.Inc()
			s.debug("dns query would be blocked (report mode)", client, q, DecisionAllow, ReasonTunnel)
		}
	}
	if rt.profile.Refused(name, q.Qtype) {
		return s.block(rt, req, opt, client, q, groupName, ReasonQType, dns.RcodeRefused)
	}
	e, err := s.forward(ctx, rt, req, opt, q, name, now)
	if err == nil && stale != nil && e.Rcode != dns.RcodeSuccess && e.Rcode != dns.RcodeNameError {
		err = fmt.Errorf("upstreams answered %s", dns.RcodeToString[e.Rcode])
	}
	if err != nil {
		if stale != nil {
			s.m.queries.WithLabelValues(DecisionAllow, ReasonStale).Inc()
			return s.fromEntry(rt, req, opt, client, name, q, stale, now, true, maxSize, buf, ReasonStale)
		}
		s.m.queries.WithLabelValues(DecisionError, ReasonServFail).Inc()
		if s.log.Enabled(ctx, slog.LevelWarn) {
			s.log.Warn("dns upstream failed", LogClient, client.String(), LogQName, q.Name,
				LogQType, dns.TypeToString[q.Qtype], LogDecision, DecisionError, LogError, err.Error())
		}
		return s.errorReply(rt, req, opt, dns.RcodeServerFailure, ReasonServFail)
	}
	if detect {
		big := 0
		if q.Qtype != dns.TypeA && q.Qtype != dns.TypeAAAA {
			big = e.Size()
		}
		s.tracker.ObserveAnswer(now, rt.profile, client, domain, e.Rcode == dns.RcodeNameError, big)
	}
	e.Domain = domain
	if rt.cacheOn && e.Cacheable {
		s.cache.Set(key, e.Entry)
	}
	s.m.allowUp.Inc()
	return s.fromEntry(rt, req, opt, client, name, q, e.Entry, now, false, maxSize, buf, ReasonUpstream)
}

// quarantined handles a query of a pair in quarantine: blocked in block
// mode (logged at debug level: the alert was the record), counted as
// would-block in report mode.
func (s *Server) quarantined(rt *runtime, req *dns.Msg, opt *dns.OPT, client netip.Addr, q dns.Question, name string) (outcome, bool) {
	if rt.profile.Mode != tunnel.ModeBlock {
		s.m.wouldBlock.Inc()
		s.debug("dns query would be blocked (report mode)", client, q, DecisionAllow, ReasonTunnel)
		return outcome{}, false
	}
	s.m.blockTunnel.Inc()
	s.debug("dns query blocked", client, q, DecisionBlock, ReasonTunnel)
	s.admin.blocked(name)
	return s.errorReply(rt, req, opt, rt.blockRcode, ReasonTunnel), true
}

// fromEntry writes a (cached or fresh) entry for this client and records
// its addresses in the resolved table before the client sees them.
func (s *Server) fromEntry(rt *runtime, req *dns.Msg, opt *dns.OPT, client netip.Addr, name string, q dns.Question,
	e *cache.Entry, now time.Time, stale bool, maxSize int, buf []byte, reason string) outcome {
	if len(e.Addrs) > 0 {
		ttl := e.TTL(now)
		if stale || ttl < 0 {
			ttl = 30 * time.Second
		}
		s.resolved.record(client, name, e.Addrs, now.Add(ttl+rt.grace), now)
	}
	b := e.Wire(buf, req.Id, q.Name, req.RecursionDesired, req.CheckingDisabled, now, stale)
	if opt != nil {
		b = appendOPT(b, rt.udpSize, opt.Do())
	}
	if len(b) > maxSize {
		var m dns.Msg
		if err := m.Unpack(b); err == nil {
			m.Truncate(maxSize)
			if p, err := m.Pack(); err == nil {
				b = p
			}
		}
	}
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("dns query answered", LogClient, client.String(), LogQName, q.Name, LogQType, dns.TypeToString[q.Qtype],
			LogDecision, DecisionAllow, LogReason, reason, LogRcode, dns.RcodeToString[e.Rcode])
	}
	return outcome{wire: b, addrs: e.Addrs, rcode: e.Rcode, reason: reason}
}

// appendOPT adds an OPT record (our buffer size, the DO bit) to a packed
// message with none.
func appendOPT(b []byte, size int, do bool) []byte {
	ar := binary.BigEndian.Uint16(b[10:])
	binary.BigEndian.PutUint16(b[10:], ar+1)
	var flags uint16
	if do {
		flags = 0x8000
	}
	return append(b, 0, 0, 41, byte(size>>8), byte(size), 0, 0, byte(flags>>8), byte(flags), 0, 0)
}

func (s *Server) block(rt *runtime, req *dns.Msg, opt *dns.OPT, client netip.Addr, q dns.Question, group, reason string, rcode int) outcome {
	decision := DecisionBlock
	if rcode == dns.RcodeRefused && (reason == ReasonQType || reason == ReasonNoGroup) {
		decision = DecisionRefuse
	}
	s.m.queries.WithLabelValues(decision, reason).Inc()
	s.admin.blocked(strings.ToLower(strings.TrimSuffix(q.Name, ".")))
	if s.log.Enabled(context.Background(), slog.LevelInfo) {
		s.log.Info("dns query blocked", LogClient, client.String(), LogQName, truncName(q.Name), LogQType, typeString(q.Qtype),
			LogDecision, decision, LogReason, reason, LogGroup, group, LogRcode, dns.RcodeToString[rcode])
	}
	return s.errorReply(rt, req, opt, rcode, reason)
}

func (s *Server) debug(msg string, client netip.Addr, q dns.Question, decision, reason string) {
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug(msg, LogClient, client.String(), LogQName, truncName(q.Name), LogQType, typeString(q.Qtype),
			LogDecision, decision, LogReason, reason)
	}
}

func truncName(n string) string {
	if len(n) > 120 {
		return n[:120] + "..."
	}
	return n
}

func typeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return fmt.Sprintf("TYPE%d", t)
}

// errorReply answers with rcode and no records (plus OPT if the client
// sent one).
func (s *Server) errorReply(rt *runtime, req *dns.Msg, opt *dns.OPT, rcode int, reason string) outcome {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	if len(req.Question) > 1 {
		m.Question = req.Question[:1]
	}
	if opt != nil || rcode > 0xF {
		o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		o.SetUDPSize(uint16(rt.udpSize))
		if rcode > 0xF {
			o.SetExtendedRcode(uint16(rcode))
		}
		m.Extra = []dns.RR{o}
	}
	b, err := m.Pack()
	if err != nil {
		return outcome{rcode: rcode, reason: reason}
	}
	return outcome{wire: b, rcode: rcode, reason: reason}
}

// forwarded is an upstream answer ready for the cache.
type forwarded struct {
	*cache.Entry
	Cacheable bool
}

// forward asks the upstreams, in order of health, up to attempts of them.
func (s *Server) forward(ctx context.Context, rt *runtime, req *dns.Msg, opt *dns.OPT, q dns.Question, name string, now time.Time) (forwarded, error) {
	uq := new(dns.Msg)
	uq.Id = dns.Id() // fresh random ID towards upstreams
	uq.RecursionDesired = true
	uq.CheckingDisabled = req.CheckingDisabled
	uq.Question = []dns.Question{q}
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(uint16(rt.udpSize))
	if opt != nil {
		if opt.Do() {
			o.SetDo()
		}
		if rt.ecsPass {
			for _, eo := range opt.Option {
				if eo.Option() == dns.EDNS0SUBNET {
					o.Option = append(o.Option, eo)
				}
			}
		}
	}
	uq.Extra = []dns.RR{o}
	var r *dns.Msg
	var err error
	if s.exchangeHook != nil {
		r, err = s.exchangeHook(uq)
	} else {
		var buf [8]*upstream
		cands := pick(rt.upstreams, name, now, buf[:0])
		if len(cands) == 0 {
			return forwarded{}, errNoUp
		}
		err = errNoUp
		for i, u := range cands {
			if i >= rt.attempts {
				break
			}
			var resp *dns.Msg
			resp, err = s.exchange(ctx, rt, u, uq)
			if err == nil && resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
				err = fmt.Errorf("%s answered %s", u.addr, dns.RcodeToString[resp.Rcode])
				if i+1 >= min(len(cands), rt.attempts) {
					r = resp // the last one: pass its rcode on
				}
			}
			u.report(err == nil, s.now())
			if err != nil {
				s.m.upstream.WithLabelValues(u.addr, "error").Inc()
				continue
			}
			s.m.upstream.WithLabelValues(u.addr, "ok").Inc()
			r = resp
			break
		}
		if r == nil {
			return forwarded{}, err
		}
		err = nil
	}
	if err != nil {
		return forwarded{}, err
	}
	return s.prepare(rt, r, now)
}

// prepare strips the upstream's OPT, computes the cache lifetime and
// packs the answer into a cache entry.
func (s *Server) prepare(rt *runtime, r *dns.Msg, now time.Time) (forwarded, error) {
	extra := r.Extra[:0:0]
	for _, rr := range r.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	r.Extra = extra
	r.Authoritative = false
	r.Compress = true
	var addrs []netip.Addr
	minTTL := uint32(1<<31 - 1)
	for _, rr := range r.Answer {
		minTTL = min(minTTL, rr.Header().Ttl)
		switch v := rr.(type) {
		case *dns.A:
			if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
				addrs = append(addrs, a)
			}
		case *dns.AAAA:
			if a, ok := netip.AddrFromSlice(v.AAAA); ok {
				addrs = append(addrs, a)
			}
		}
	}
	cacheable := !r.Truncated
	var ttl uint32
	switch {
	case r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0:
		ttl = min(max(minTTL, rt.minTTL), rt.maxTTL)
	case r.Rcode == dns.RcodeSuccess || r.Rcode == dns.RcodeNameError:
		// RFC 2308: negative answers live min(SOA TTL, SOA MINIMUM);
		// without an SOA they are not cached.
		cacheable = false
		for _, rr := range r.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				ttl = min(soa.Hdr.Ttl, soa.Minttl, rt.negTTL)
				cacheable = cacheable || !r.Truncated
			}
		}
	default:
		cacheable = false
	}
	if ttl == 0 {
		cacheable = false
	}
	wire, err := r.Pack()
	if err != nil {
		return forwarded{}, fmt.Errorf("pack upstream answer: %w", err)
	}
	ceil := rt.maxTTL
	floor := uint32(0)
	if r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
		floor = rt.minTTL
	} else {
		ceil = min(ceil, max(ttl, 0))
	}
	e, err := cache.NewEntry(wire, r.Rcode, time.Duration(ttl)*time.Second, floor, max(ceil, floor), addrs, now)
	if err != nil {
		return forwarded{}, err
	}
	return forwarded{Entry: e, Cacheable: cacheable}, nil
}

func (s *Server) alert(a *tunnel.Alert) {
	s.m.alerts.WithLabelValues(a.Mode).Inc()
	s.admin.alert(a)
	msg := "dns tunnel detected"
	if a.Mode != tunnel.ModeBlock.String() {
		msg = "dns tunnel detected (report only)"
	}
	s.log.Warn(msg, LogClient, a.Client.String(), LogDomain, a.Domain, LogMode, a.Mode, LogScore, a.Score,
		LogFeatures, strings.Join(a.Features, ","), LogRules, strings.Join(a.Rules, ","), LogQueries, a.Queries,
		LogSuspicious, a.Suspicious, LogNameBytes, a.NameBytes, LogDistinct, a.Distinct, LogQuarantine, a.Quarantine,
		LogQName, truncName(a.LastQuery))
}

// Resolve looks up A and AAAA for name on behalf of client, through the
// same policy, detector, cache and upstreams as the client's own queries,
// and records the answers for client (so Resolved is true afterwards).
func (s *Server) Resolve(ctx context.Context, client netip.Addr, name string) ([]netip.Addr, error) {
	fq := dns.Fqdn(name)
	if _, ok := dns.IsDomainName(fq); !ok || len(fq) > 254 {
		return nil, fmt.Errorf("dnsguard: %q is not a domain name", name)
	}
	var addrs []netip.Addr
	var errs []error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		req := new(dns.Msg)
		req.SetQuestion(fq, qt)
		out := s.answer(ctx, client.Unmap(), true, req, nil)
		switch {
		case out.rcode == dns.RcodeSuccess:
			addrs = append(addrs, out.addrs...)
		case out.reason == ReasonDenyList || out.reason == ReasonNotAllowed || out.reason == ReasonTunnel ||
			out.reason == ReasonNoGroup || out.reason == ReasonQType || out.reason == ReasonRateLimit:
			return nil, fmt.Errorf("%w: %s (%s)", ErrBlocked, name, out.reason)
		case out.rcode == dns.RcodeNameError:
			errs = append(errs, fmt.Errorf("%w: %s", ErrNXDomain, name))
		default:
			errs = append(errs, fmt.Errorf("%w: %s: %s", ErrUpstream, name, dns.RcodeToString[out.rcode]))
		}
	}
	if len(addrs) > 0 {
		return addrs, nil
	}
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return nil, fmt.Errorf("%w: %s", ErrNoAnswer, name)
}

// Resolved reports whether dnsguard handed addr to client as an answer
// for name, and that answer's TTL plus the grace period has not passed.
func (s *Server) Resolved(client netip.Addr, name string, addr netip.Addr) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	return s.resolved.lookup(client.Unmap(), name, addr.Unmap(), s.now())
}

// Sizes are dnsguard's internal table sizes (entries and accounted bytes).
type Sizes struct {
	CacheEntries     int   `json:"cache_entries"`
	CacheBytes       int64 `json:"cache_bytes"`
	TrackedPairs     int   `json:"tracked_pairs"`
	QuarantinedPairs int   `json:"quarantined_pairs"`
	TrackerBytes     int64 `json:"tracker_bytes"`
	ResolvedEntries  int   `json:"resolved_entries"`
	ResolvedBytes    int64 `json:"resolved_bytes"`
	RateLimitClients int   `json:"ratelimit_clients"`
}

// Sizes returns the current table sizes.
func (s *Server) Sizes() Sizes {
	var z Sizes
	z.CacheEntries, z.CacheBytes = s.cache.Size()
	z.TrackedPairs, z.QuarantinedPairs, z.TrackerBytes = s.tracker.Size()
	z.ResolvedEntries, z.ResolvedBytes = s.resolved.size()
	z.RateLimitClients = s.limiter.size()
	return z
}
