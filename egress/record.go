package egress

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Log field names of decision and close records. They match
// docs/egress.md word for word.
const (
	FieldConnID    = "conn_id"
	FieldListener  = "listener"
	FieldMode      = "mode"
	FieldSource    = "source"
	FieldIdentity  = "identity"
	FieldSNI       = "sni"
	FieldHost      = "host"
	FieldPort      = "port"
	FieldResolved  = "resolved"
	FieldDialled   = "dialled"
	FieldDecision  = "decision"
	FieldRule      = "rule"
	FieldReason    = "reason"
	FieldBytesUp   = "bytes_up"
	FieldBytesDown = "bytes_down"
	FieldDuration  = "duration"
	FieldError     = "error"

	MsgDecision = "egress decision"
	MsgClose    = "egress close"
)

// record accumulates the facts of one connection for its decision and
// close records.
type record struct {
	id       uint64
	listener *listenerRT
	start    time.Time
	src      netip.AddrPort
	identity string
	sni      string // the server name from the ClientHello, as normalised
	host     string // CONNECT host or HTTP Host (or the original destination in transparent mode)
	port     uint16
	resolved []netip.Addr
	dialled  netip.AddrPort
	dec      decision
	decided  bool
	err      error // detail for the log (a peek or dial error)
	up, down int64

	// The text of src, dialled and resolved, made once for both records.
	srcText, dialledText, resolvedText string
}

// maxAttrs is the most fields a record has.
const maxAttrs = 20

// appendAttrs appends the fields shared by the decision and close records.
func (r *record) appendAttrs(a []slog.Attr) []slog.Attr {
	a = append(a,
		slog.Uint64(FieldConnID, r.id),
		slog.String(FieldListener, r.listener.name),
		slog.String(FieldMode, r.listener.modeName),
		slog.String(FieldSource, r.text(&r.srcText, func() string { return r.src.String() })),
	)
	if r.identity != "" {
		a = append(a, slog.String(FieldIdentity, r.identity))
	}
	if r.sni != "" {
		a = append(a, slog.String(FieldSNI, r.sni))
	}
	if r.host != "" {
		a = append(a, slog.String(FieldHost, r.host))
	}
	if r.port != 0 {
		a = append(a, slog.Int(FieldPort, int(r.port)))
	}
	if len(r.resolved) > 0 {
		a = append(a, slog.String(FieldResolved, r.text(&r.resolvedText, func() string { return joinAddrs(r.resolved) })))
	}
	if r.dialled.IsValid() {
		a = append(a, slog.String(FieldDialled, r.text(&r.dialledText, func() string { return r.dialled.String() })))
	}
	a = append(a, slog.String(FieldDecision, r.dec.decisionName()))
	if n := r.dec.ruleName(); n != "" {
		a = append(a, slog.String(FieldRule, n))
	}
	a = append(a, slog.String(FieldReason, string(r.dec.reason)))
	if r.err != nil {
		a = append(a, slog.String(FieldError, r.err.Error()))
	}
	return a
}

// text returns *cache, filling it with make() the first time. The
// fields it caches are set before the decision record and not changed
// after it.
func (r *record) text(cache *string, make func() string) string {
	if *cache == "" {
		*cache = make()
	}
	return *cache
}

// joinAddrs is strings.Join of the addresses' text, in one allocation.
func joinAddrs(addrs []netip.Addr) string {
	if len(addrs) == 1 {
		return addrs[0].String()
	}
	b := make([]byte, 0, 16*len(addrs))
	for i, x := range addrs {
		if i > 0 {
			b = append(b, ',')
		}
		b = x.AppendTo(b)
	}
	return string(b)
}

// metrics are registered once per Proxy and live for the process.
type metrics struct {
	decisions *prometheus.CounterVec
	active    *prometheus.GaugeVec
	bytes     *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	reloads   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_egress_decisions_total",
			Help: "Egress connection decisions by listener, decision (allow, deny) and reason.",
		}, []string{FieldListener, FieldDecision, FieldReason}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ztgate_egress_connections_active",
			Help: "Egress connections currently open, by listener.",
		}, []string{FieldListener}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_egress_bytes_total",
			Help: "Bytes spliced through the egress proxy, by listener and direction (up: client to destination).",
		}, []string{FieldListener, "direction"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ztgate_egress_connection_duration_seconds",
			Help:    "Lifetime of allowed egress connections.",
			Buckets: []float64{.01, .05, .1, .5, 1, 5, 15, 60, 300, 1800, 3600},
		}, []string{FieldListener}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_egress_config_reloads_total",
			Help: "Egress config applications by result (success, failure).",
		}, []string{"result"}),
	}
	// A Proxy created again on the same registry (egress turned off and
	// on by reloads) reuses the collectors registered the first time.
	var err error
	m.decisions, err = register(reg, m.decisions)
	if err == nil {
		m.active, err = register(reg, m.active)
	}
	if err == nil {
		m.bytes, err = register(reg, m.bytes)
	}
	if err == nil {
		m.duration, err = register(reg, m.duration)
	}
	if err == nil {
		m.reloads, err = register(reg, m.reloads)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// listenerMetrics are one listener's series, bound once per compiled
// config (WithLabelValues hashes its labels on every call; these do not).
type listenerMetrics struct {
	active   prometheus.Gauge
	up, down prometheus.Counter
	duration prometheus.Observer
	allowed  prometheus.Counter
	denied   map[Reason]prometheus.Counter // every reason in denyReasons
	vec      *prometheus.CounterVec        // for a reason not bound above
	name     string
}

// denyReasons are the reasons a decision record can carry with decision
// deny; their series exist (at zero) from the start.
var denyReasons = []Reason{
	ReasonNotAllowlisted, ReasonDenyRule, ReasonPublicResolver, ReasonSNIMismatch, ReasonNoSNI,
	ReasonECH, ReasonIPSNI, ReasonInvalidName, ReasonBadRequest, ReasonBadClientHello, ReasonPeekTimeout,
	ReasonPrivate, ReasonMetadata, ReasonReserved, ReasonDNSFailed, ReasonDNSMismatch, ReasonNotViaDNSGuard,
	ReasonNoOriginalDst, ReasonConnLimit, ReasonSourceLimit, ReasonDialFailed, ReasonShuttingDown,
	ReasonClientTLSFailed, ReasonUnsupportedProto,
}

func (m *metrics) forListener(name string) *listenerMetrics {
	lm := &listenerMetrics{
		active:   m.active.WithLabelValues(name),
		up:       m.bytes.WithLabelValues(name, "up"),
		down:     m.bytes.WithLabelValues(name, "down"),
		duration: m.duration.WithLabelValues(name),
		allowed:  m.decisions.WithLabelValues(name, "allow", string(ReasonAllowed)),
		denied:   make(map[Reason]prometheus.Counter, len(denyReasons)),
		vec:      m.decisions,
		name:     name,
	}
	for _, r := range denyReasons {
		lm.denied[r] = m.decisions.WithLabelValues(name, "deny", string(r))
	}
	return lm
}

func (lm *listenerMetrics) decision(d decision) prometheus.Counter {
	if d.allow {
		return lm.allowed
	}
	if c, ok := lm.denied[d.reason]; ok {
		return c
	}
	return lm.vec.WithLabelValues(lm.name, "deny", string(d.reason))
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old, nil
			}
		}
		return c, err
	}
	return c, nil
}

// logDecision writes the decision record and counts it.
func (p *Proxy) logDecision(r *record) {
	r.decided = true
	r.listener.m.decision(r.dec).Inc()
	if !r.dec.allow {
		name := r.sni
		if name == "" {
			name = r.host
		}
		p.denied.add(name, r.port, r.dec.reason)
	}
	if p.log.Enabled(context.Background(), slog.LevelInfo) {
		var buf [maxAttrs]slog.Attr // on the stack: LogAttrs copies the fields
		p.log.LogAttrs(context.Background(), slog.LevelInfo, MsgDecision, r.appendAttrs(buf[:0])...)
	}
}

// logClose writes the close record.
func (p *Proxy) logClose(r *record) {
	d := p.now().Sub(r.start)
	if r.dec.allow {
		lm := r.listener.m
		lm.up.Add(float64(r.up))
		lm.down.Add(float64(r.down))
		lm.duration.Observe(d.Seconds())
	}
	if p.log.Enabled(context.Background(), slog.LevelInfo) {
		var buf [maxAttrs]slog.Attr
		a := append(r.appendAttrs(buf[:0]),
			slog.Int64(FieldBytesUp, r.up),
			slog.Int64(FieldBytesDown, r.down),
			slog.Float64(FieldDuration, d.Seconds()),
		)
		p.log.LogAttrs(context.Background(), slog.LevelInfo, MsgClose, a...)
	}
}
