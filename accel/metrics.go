package accel

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric label names; they match docs/accel.md word for word.
const (
	LabelProvider = "provider"
	LabelKeyType  = "key_type"
	LabelResult   = "result"
	LabelReason   = "reason"
)

// Result values of ztgate_accel_operations_total.
const (
	ResultOK       = "ok"
	ResultError    = "error"
	ResultOverload = "overload"
	ResultTimeout  = "timeout"
	ResultClosed   = "closed"
)

// Log field names; they match docs/accel.md word for word.
const (
	LogProvider  = "provider"
	LogRequested = "requested"
	LogReason    = "reason"
	LogCPU       = "cpu_features"
	LogLibrary   = "library"
	LogVersion   = "version"
	LogSelfTest  = "selftest"
	LogWorkers   = "workers"
	LogQueue     = "queue_size"
	LogBatch     = "batch_size"
	LogDeadline  = "batch_deadline"
)

type metrics struct {
	ops       *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	batch     prometheus.Histogram
	fallbacks *prometheus.CounterVec
	keys      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, depth func() float64) (*metrics, error) {
	m := &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_accel_operations_total",
			Help: "Private-key operations by provider, key type and result (ok, error, overload, timeout, closed).",
		}, []string{LabelProvider, LabelKeyType, LabelResult}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ztgate_accel_sign_seconds",
			Help:    "Time from a signature's submission to its result, queueing included.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 1},
		}, []string{LabelProvider, LabelKeyType}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ztgate_accel_batch_size",
			Help:    "Signatures handed to the provider in one batch.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_accel_fallbacks_total",
			Help: "Times the go provider served instead of the configured one, by provider and reason.",
		}, []string{LabelProvider, LabelReason}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ztgate_accel_keys",
			Help: "Certificate keys imported into the provider and cached.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	m.ops = register(reg, m.ops)
	m.latency = register(reg, m.latency)
	m.batch = register(reg, m.batch)
	m.fallbacks = register(reg, m.fallbacks)
	m.keys = register(reg, m.keys)
	qd := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ztgate_accel_queue_depth",
		Help: "Signatures waiting for a worker.",
	}, depth)
	if err := reg.Register(qd); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
		// A second engine in one process (tests, bench) keeps the
		// first one's gauge.
	}
	return m, nil
}

// register registers c, or returns the collector already registered
// under the same name so that a second engine shares the series.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
	}
	return c
}
