package gateway

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric label names, as documented in docs/metrics.md.
const (
	LabelListener = "listener"
	LabelRoute    = "route"
	LabelCode     = "code"
	LabelResult   = "result"
	LabelVersion  = "version"
	LabelReason   = "reason"
)

// Metrics are the gateway's process-wide collectors. They live across
// config reloads.
type Metrics struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	handshakes   *prometheus.CounterVec
	connActive   *prometheus.GaugeVec
	connRejected *prometheus.CounterVec
	denied       *prometheus.CounterVec
	reloads      *prometheus.CounterVec
	reloadTime   prometheus.Gauge
	configInfo   *prometheus.GaugeVec
}

// NewMetrics registers the gateway's collectors on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_http_requests_total",
			Help: "Ingress HTTP requests by listener, route and status code.",
		}, []string{LabelListener, LabelRoute, LabelCode}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ztgate_http_request_duration_seconds",
			Help:    "Ingress request latency, from headers read to response done.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{LabelListener, LabelRoute}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_tls_handshakes_total",
			Help: "TLS handshakes on TCP listeners by result and TLS version.",
		}, []string{LabelListener, LabelResult, LabelVersion}),
		connActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ztgate_connections_active",
			Help: "Open client connections per listener (TCP).",
		}, []string{LabelListener}),
		connRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_connections_rejected_total",
			Help: "Connections closed at accept because the listener's max_connections was reached.",
		}, []string{LabelListener}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_http_denied_total",
			Help: "Requests refused by the gateway before any upstream, by stage reason.",
		}, []string{LabelListener, LabelRoute, LabelReason}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_config_reload_total",
			Help: "Config reloads by result (success, failure).",
		}, []string{LabelResult}),
		reloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ztgate_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful config load.",
		}),
		configInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ztgate_config_info",
			Help: "The config in use: 1 for the current file and content hash.",
		}, []string{"file", "sha256"}),
	}
	reg.MustRegister(m.requests, m.duration, m.handshakes, m.connActive, m.connRejected,
		m.denied, m.reloads, m.reloadTime, m.configInfo)
	// Make the failure series visible before the first failure.
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	return m
}

// ReloadResult counts one reload attempt.
func (m *Metrics) ReloadResult(ok bool) {
	if ok {
		m.reloads.WithLabelValues("success").Inc()
		m.reloadTime.SetToCurrentTime()
		return
	}
	m.reloads.WithLabelValues("failure").Inc()
}

// ConfigLoaded records the time the first config was applied (a start
// is not counted as a reload).
func (m *Metrics) ConfigLoaded() { m.reloadTime.SetToCurrentTime() }

// SetConfigInfo records which config is in use.
func (m *Metrics) SetConfigInfo(file, sha string) {
	m.configInfo.Reset()
	m.configInfo.WithLabelValues(file, sha).Set(1)
}

// routeMetrics are one listener and route's series, bound once (on the
// route's first request, so /metrics lists only series that happened)
// instead of hashing label values on every request.
type routeMetrics struct {
	m        *Metrics
	listener string
	route    string
	bind     sync.Once
	duration prometheus.Observer
	codes    sync.Map // int → prometheus.Counter
}

// newRouteMetrics returns the series of listener and route; nil when the
// config is compiled without metrics (`ztgate validate`).
func newRouteMetrics(m *Metrics, listener, route string) *routeMetrics {
	if m == nil {
		return nil
	}
	return &routeMetrics{m: m, listener: listener, route: route}
}

// observe counts one request with its final status and latency.
func (rm *routeMetrics) observe(status int, d time.Duration) {
	rm.bind.Do(func() { rm.duration = rm.m.duration.WithLabelValues(rm.listener, rm.route) })
	rm.duration.Observe(d.Seconds())
	if c, ok := rm.codes.Load(status); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c, _ := rm.codes.LoadOrStore(status, rm.m.requests.WithLabelValues(rm.listener, rm.route, strconv.Itoa(status)))
	c.(prometheus.Counter).Inc()
}
