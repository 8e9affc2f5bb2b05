package jwt

import "github.com/prometheus/client_golang/prometheus"

// Metric label names, as in docs/authn.md.
const (
	labelProvider = "provider"
	labelResult   = "result"
	labelJWKS     = "jwks"
)

type metrics struct {
	verifications  *prometheus.CounterVec // provider, result (ok or a Reason)
	cache          *prometheus.CounterVec // result: hit, miss
	fetches        *prometheus.CounterVec // jwks, result: ok, error
	refetchLimited *prometheus.CounterVec // jwks
	keys           *prometheus.GaugeVec   // jwks
	lastSuccess    *prometheus.GaugeVec   // jwks
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_authn_jwt_total",
			Help: "Presented JWTs by provider and result (ok, or the reason they were refused).",
		}, []string{labelProvider, labelResult}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_authn_jwt_cache_total",
			Help: "Verified-token cache lookups by result (hit, miss).",
		}, []string{labelResult}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_authn_jwks_fetch_total",
			Help: "JWKS fetches by URL and result (ok, error).",
		}, []string{labelJWKS, labelResult}),
		refetchLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_authn_jwks_refetch_limited_total",
			Help: "Unknown-kid refetches skipped by the rate limit, by JWKS URL.",
		}, []string{labelJWKS}),
		keys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ztgate_authn_jwks_keys",
			Help: "Signature keys held for a JWKS URL.",
		}, []string{labelJWKS}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ztgate_authn_jwks_last_success_timestamp_seconds",
			Help: "Unix time of the last successful fetch of a JWKS URL.",
		}, []string{labelJWKS}),
	}
	if reg != nil {
		reg.MustRegister(m.verifications, m.cache, m.fetches, m.refetchLimited, m.keys, m.lastSuccess)
	}
	return m
}
