package certs

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric label names (they match docs/certificates.md).
const (
	LabelListener = "listener"
	LabelName     = "name"
	LabelSource   = "source"
)

type metrics struct {
	m              *Manager
	expiry         *prometheus.Desc
	obtainFailures *prometheus.CounterVec
	renewFailures  *prometheus.CounterVec
}

func newMetrics(m *Manager) *metrics {
	return &metrics{
		m: m,
		expiry: prometheus.NewDesc("ztgate_tls_certificate_expiry_seconds",
			"Expiry (NotAfter, unix seconds) of the certificate each listener serves for each name.",
			[]string{LabelListener, LabelName, LabelSource}, nil),
		obtainFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_tls_certificate_obtain_failures_total",
			Help: "Failed attempts to obtain a new certificate, by source.",
		}, []string{LabelSource}),
		renewFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_tls_certificate_renew_failures_total",
			Help: "Failed attempts to renew a certificate, by source.",
		}, []string{LabelSource}),
	}
}

func (x *metrics) register(r prometheus.Registerer) error {
	return errors.Join(r.Register(x), r.Register(x.obtainFailures), r.Register(x.renewFailures))
}

// Describe implements prometheus.Collector for the expiry gauge.
func (x *metrics) Describe(ch chan<- *prometheus.Desc) { ch <- x.expiry }

// Collect reports, at scrape time, the expiry of the certificate that
// would be served for each listener and name (the latest-expiring one).
func (x *metrics) Collect(ch chan<- prometheus.Metric) {
	s := x.m.snap.Load()
	if s == nil {
		return
	}
	for _, ln := range s.order {
		ls := s.listeners[ln]
		for _, n := range ls.names {
			var best float64
			for _, c := range x.m.candidates(s, ls, n) {
				if c.Leaf == nil {
					continue
				}
				if t := float64(c.Leaf.NotAfter.Unix()); t > best {
					best = t
				}
			}
			if best > 0 {
				ch <- prometheus.MustNewConstMetric(x.expiry, prometheus.GaugeValue, best, ln, n, ls.source.String())
			}
		}
	}
}
