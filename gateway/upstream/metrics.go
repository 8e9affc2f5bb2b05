package upstream

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric label names (as documented in docs/upstreams.md).
const (
	LabelUpstream = "upstream"
	LabelEndpoint = "endpoint"
	LabelCode     = "code"
	LabelReason   = "reason"
)

// Metrics are the upstream metrics. Create them once per process with
// NewMetrics; pools from every reload share them.
type Metrics struct {
	requests  *prometheus.CounterVec   // upstream, endpoint, code
	duration  *prometheus.HistogramVec // upstream
	healthy   *prometheus.GaugeVec     // upstream, endpoint
	ejections *prometheus.CounterVec   // upstream, endpoint
	retries   *prometheus.CounterVec   // upstream, reason
}

// NewMetrics creates the upstream metrics and registers them on reg (nil:
// not registered, as tests may want).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_upstream_requests_total",
			Help: "Upstream attempts by upstream, endpoint and result code: the HTTP status, or a failure (connect_failure, tls_failure, timeout, reset, ...).",
		}, []string{LabelUpstream, LabelEndpoint, LabelCode}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ztgate_upstream_request_duration_seconds",
			Help:    "Time from the first attempt to the end of the upstream response body.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{LabelUpstream}),
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ztgate_upstream_endpoint_healthy",
			Help: "1 when the endpoint takes traffic (passes active checks and is not ejected), else 0.",
		}, []string{LabelUpstream, LabelEndpoint}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_upstream_ejections_total",
			Help: "Passive (outlier) ejections of an endpoint after consecutive failures.",
		}, []string{LabelUpstream, LabelEndpoint}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_upstream_retries_total",
			Help: "Retries on another endpoint, by the failure that caused them.",
		}, []string{LabelUpstream, LabelReason}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration, m.healthy, m.ejections, m.retries} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// endpointCounters caches the request counters of one endpoint, so the
// hot path does not hash label values per request.
type endpointCounters struct {
	m        *Metrics
	upstream string
	endpoint string
	byCode   sync.Map // int (status) or Kind+1000 → prometheus.Counter
}

func (c *endpointCounters) status(code int) {
	if v, ok := c.byCode.Load(code); ok {
		v.(prometheus.Counter).Inc()
		return
	}
	ctr := c.m.requests.WithLabelValues(c.upstream, c.endpoint, strconv.Itoa(code))
	c.byCode.Store(code, ctr)
	ctr.Inc()
}

func (c *endpointCounters) failure(k Kind) {
	key := 1000 + int(k)
	if v, ok := c.byCode.Load(key); ok {
		v.(prometheus.Counter).Inc()
		return
	}
	ctr := c.m.requests.WithLabelValues(c.upstream, c.endpoint, k.String())
	c.byCode.Store(key, ctr)
	ctr.Inc()
}
