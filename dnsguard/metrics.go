package dnsguard

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Log field names. They match docs/dns.md word for word.
const (
	LogClient     = "client"
	LogQName      = "qname"
	LogQType      = "qtype"
	LogDecision   = "decision"
	LogReason     = "reason"
	LogGroup      = "group"
	LogRcode      = "rcode"
	LogUpstream   = "upstream"
	LogCache      = "cache"
	LogDomain     = "domain"
	LogMode       = "mode"
	LogScore      = "score"
	LogFeatures   = "features"
	LogRules      = "rules"
	LogQueries    = "queries"
	LogSuspicious = "suspicious"
	LogNameBytes  = "name_bytes"
	LogDistinct   = "distinct"
	LogQuarantine = "quarantine"
	LogError      = "error"
	LogAddress    = "address"
)

// Decisions (the "decision" log field and metric label).
const (
	DecisionAllow  = "allow"
	DecisionBlock  = "block"
	DecisionRefuse = "refuse"
	DecisionError  = "error"
)

// Reasons (the "reason" log field and metric label).
const (
	ReasonCache      = "cache"
	ReasonStale      = "stale"
	ReasonUpstream   = "upstream"
	ReasonDenyList   = reasonDenyList
	ReasonNotAllowed = reasonNotAllowed
	ReasonNoGroup    = "no_group"
	ReasonQType      = "qtype"
	ReasonTunnel     = "tunnel"
	ReasonRateLimit  = "rate_limit"
	ReasonMalformed  = "malformed"
	ReasonServFail   = "servfail"
)

type metrics struct {
	queries     *prometheus.CounterVec
	upstream    *prometheus.CounterVec
	alerts      *prometheus.CounterVec
	wouldBlock  prometheus.Counter
	reloads     *prometheus.CounterVec
	allowCache  prometheus.Counter
	allowUp     prometheus.Counter
	blockTunnel prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Server) (*metrics, error) {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_dns_queries_total",
			Help: "DNS queries answered by dnsguard, by decision and reason.",
		}, []string{"decision", "reason"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_dns_upstream_requests_total",
			Help: "Exchanges with upstream resolvers, by upstream and result (ok, error).",
		}, []string{"upstream", "result"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_dns_tunnel_alerts_total",
			Help: "(client, domain) pairs judged a DNS tunnel, by mode (block, report).",
		}, []string{"mode"}),
		wouldBlock: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ztgate_dns_tunnel_would_block_total",
			Help: "Queries report mode would have blocked as tunnel traffic.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_dns_reloads_total",
			Help: "dnsguard config applications, by result (ok, error).",
		}, []string{"result"}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	cs := []prometheus.Collector{m.queries, m.upstream, m.alerts, m.wouldBlock, m.reloads,
		gauge("ztgate_dns_cache_entries", "Answers in the dnsguard cache.", func() float64 { n, _ := s.cache.Size(); return float64(n) }),
		gauge("ztgate_dns_cache_bytes", "Accounted bytes of the dnsguard cache.", func() float64 { _, b := s.cache.Size(); return float64(b) }),
		gauge("ztgate_dns_tunnel_tracked_pairs", "(client, registered domain) pairs tracked by the tunnel detector.", func() float64 { n, _, _ := s.tracker.Size(); return float64(n) }),
		gauge("ztgate_dns_tunnel_quarantined_pairs", "(client, registered domain) pairs in quarantine.", func() float64 { _, q, _ := s.tracker.Size(); return float64(q) }),
		gauge("ztgate_dns_resolved_entries", "(client, name) entries in the resolved-address table.", func() float64 { n, _ := s.resolved.size(); return float64(n) }),
		gauge("ztgate_dns_ratelimit_clients", "Clients tracked by the rate limiter.", func() float64 { return float64(s.limiter.size()) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.allowCache = m.queries.WithLabelValues(DecisionAllow, ReasonCache)
	m.allowUp = m.queries.WithLabelValues(DecisionAllow, ReasonUpstream)
	m.blockTunnel = m.queries.WithLabelValues(DecisionBlock, ReasonTunnel)
	return m, nil
}
