package svid

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric label names.
const (
	LabelReason      = "reason"
	LabelSource      = "source"
	LabelSPIFFEID    = "spiffe_id"
	LabelSerial      = "serial"
	LabelTrustDomain = "trust_domain"
)

type metrics struct {
	reg               prometheus.Registerer
	rotations         prometheus.Counter
	handshakeFailures *prometheus.CounterVec
	sourceErrors      *prometheus.CounterVec
	coll              *collector
}

func newMetrics(s *Source, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		rotations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ztgate_identity_svid_rotations_total",
			Help: "SVID rotations received (a new SVID replacing a previous one).",
		}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_identity_upstream_handshake_failures_total",
			Help: "SPIFFE upstream handshakes refused by the gateway, by reason: spiffe_id_mismatch, untrusted_certificate, no_svid.",
		}, []string{LabelReason}),
		sourceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_identity_source_errors_total",
			Help: "Errors from the identity source (workload_api, files), by reason.",
		}, []string{LabelSource, LabelReason}),
		coll: &collector{s: s},
	}
	for _, r := range []string{ReasonIDMismatch, ReasonUntrusted, ReasonNoSVID} {
		m.handshakeFailures.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.rotations, m.handshakeFailures, m.sourceErrors, m.coll} {
		if err := reg.Register(c); err != nil {
			m.unregister()
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) unregister() {
	for _, c := range []prometheus.Collector{m.rotations, m.handshakeFailures, m.sourceErrors, m.coll} {
		m.reg.Unregister(c)
	}
}

var (
	descReady = prometheus.NewDesc("ztgate_identity_ready",
		"1 when the gateway holds a valid SVID (or needs none), else 0.", nil, nil)
	descInfo = prometheus.NewDesc("ztgate_identity_svid_info",
		"The current SVID: always 1, labelled with its SPIFFE ID and serial number (hex).", []string{LabelSPIFFEID, LabelSerial}, nil)
	descExpiry = prometheus.NewDesc("ztgate_identity_svid_expiry_timestamp_seconds",
		"NotAfter of the current SVID, in Unix seconds.", nil, nil)
	descBundleAge = prometheus.NewDesc("ztgate_identity_bundle_age_seconds",
		"Seconds since the trust bundle of a trust domain last changed, by source (workload_api, files, static).", []string{LabelTrustDomain, LabelSource}, nil)
)

// collector reads the published snapshot at scrape time, so gauges never
// go stale and labels of a replaced SVID disappear.
type collector struct{ s *Source }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descReady
	ch <- descInfo
	ch <- descExpiry
	ch <- descBundleAge
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	sn := c.s.snap.Load()
	now := c.s.now()
	ready := 0.0
	if c.s.Ready() == nil {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready)
	if sn.svid != nil {
		leaf := sn.svid.Certificates[0]
		ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, sn.svid.ID.String(), serialHex(leaf))
		ch <- prometheus.MustNewConstMetric(descExpiry, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()))
	}
	for _, e := range sn.entries {
		ch <- prometheus.MustNewConstMetric(descBundleAge, prometheus.GaugeValue, now.Sub(e.updated).Seconds(), e.b.TrustDomain().Name(), e.origin)
	}
}
