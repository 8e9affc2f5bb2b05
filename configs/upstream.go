package configs

import (
	"fmt"
	"strings"
	"time"
)

// Load-balancing policies.
const (
	LBRoundRobin    = "round_robin"
	LBLeastRequests = "least_requests"
)

// Upstream is a pool of endpoints serving one service.
//
// Upstreams are a list with a name (not a map keyed by name) because YAML
// map keys are case-folded by the loader, and names are case-sensitive.
type Upstream struct {
	Name string `mapstructure:"name" json:"name"`
	// Endpoints are host:port pairs.
	Endpoints []string `mapstructure:"endpoints" json:"endpoints"`
	// LoadBalancing is round_robin (default) or least_requests.
	LoadBalancing string `mapstructure:"load_balancing" json:"load_balancing"`
	// TLS to the upstream; absent means plain HTTP.
	TLS *UpstreamTLS `mapstructure:"tls" json:"tls,omitempty"`
	// HTTP2 speaks HTTP/2 to the upstream (over TLS via ALPN, or h2c
	// prior knowledge on plain connections).
	HTTP2 bool `mapstructure:"http2" json:"http2,omitempty"`

	ConnectTimeout  time.Duration `mapstructure:"connect_timeout" json:"connect_timeout"`
	ResponseTimeout time.Duration `mapstructure:"response_timeout" json:"response_timeout"`
	// StreamIdleTimeout bounds the wait for the next bytes of a response
	// body once the headers arrived (default 5m, as Envoy's
	// stream_idle_timeout), so a stalled upstream cannot hold a request
	// forever.
	StreamIdleTimeout time.Duration `mapstructure:"stream_idle_timeout" json:"stream_idle_timeout"`
	IdleConnTimeout   time.Duration `mapstructure:"idle_conn_timeout" json:"idle_conn_timeout"`
	// MaxIdleConns per endpoint; size it to the expected concurrency.
	MaxIdleConns int `mapstructure:"max_idle_conns" json:"max_idle_conns"`
	// MaxConnectionAge recycles pooled connections after this time, so
	// rotated client certificates are used soon (default 0 = off, except
	// for SPIFFE upstreams where it defaults to 5m).
	MaxConnectionAge time.Duration `mapstructure:"max_connection_age" json:"max_connection_age,omitempty"`

	Retries          Retries          `mapstructure:"retries" json:"retries"`
	HealthCheck      *HealthCheck     `mapstructure:"health_check" json:"health_check,omitempty"`
	OutlierDetection OutlierDetection `mapstructure:"outlier_detection" json:"outlier_detection"`
}

// UpstreamTLS verifies the upstream. Either a CA (ca_file, or the system
// roots) for ordinary TLS, or SPIFFE verification (spiffe_id, spiffe_ids
// or trust_domain) with the gateway's own SVID as the client certificate.
type UpstreamTLS struct {
	CAFile     string `mapstructure:"ca_file" json:"ca_file,omitempty"`
	ServerName string `mapstructure:"server_name" json:"server_name,omitempty"`
	// ClientCert and ClientKey: a static client certificate (non-SPIFFE mTLS).
	ClientCert string `mapstructure:"client_cert" json:"client_cert,omitempty"`
	ClientKey  string `mapstructure:"client_key" json:"client_key,omitempty"`

	SPIFFEID    string   `mapstructure:"spiffe_id" json:"spiffe_id,omitempty"`
	SPIFFEIDs   []string `mapstructure:"spiffe_ids" json:"spiffe_ids,omitempty"`
	TrustDomain string   `mapstructure:"trust_domain" json:"trust_domain,omitempty"`
}

// SPIFFE reports whether the upstream is verified by SPIFFE identity.
func (t *UpstreamTLS) SPIFFE() bool {
	return t != nil && (t.SPIFFEID != "" || len(t.SPIFFEIDs) > 0 || t.TrustDomain != "")
}

// Retries retry idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE,
// TRACE) on another endpoint when the failure allows it.
type Retries struct {
	// Attempts is the number of retries after the first try (default 1,
	// 0 = off; at most 5).
	Attempts *int `mapstructure:"attempts" json:"attempts,omitempty"`
	// On lists what is retried: connect_failure (default), 502, 503, 504,
	// reset (a connection closed before the response headers).
	On []string `mapstructure:"on" json:"on,omitempty"`
}

// HealthCheck probes every endpoint actively.
type HealthCheck struct {
	Path               string        `mapstructure:"path" json:"path"`
	Interval           time.Duration `mapstructure:"interval" json:"interval"`
	Timeout            time.Duration `mapstructure:"timeout" json:"timeout"`
	HealthyThreshold   int           `mapstructure:"healthy_threshold" json:"healthy_threshold"`
	UnhealthyThreshold int           `mapstructure:"unhealthy_threshold" json:"unhealthy_threshold"`
	// ExpectedStatus: a response with this status class counts as
	// healthy (default 2xx and 3xx: "200-399").
	ExpectedStatus string `mapstructure:"expected_status" json:"expected_status"`
	Host           string `mapstructure:"host" json:"host,omitempty"`
}

// OutlierDetection ejects an endpoint after consecutive failures (passive
// health), for ejection_time, never more than max_ejection_percent.
type OutlierDetection struct {
	ConsecutiveFailures int           `mapstructure:"consecutive_failures" json:"consecutive_failures"`
	EjectionTime        time.Duration `mapstructure:"ejection_time" json:"ejection_time"`
	MaxEjectionPercent  int           `mapstructure:"max_ejection_percent" json:"max_ejection_percent"`
}

// RetryAttempts returns the configured retries (default 1).
func (r Retries) RetryAttempts() int {
	if r.Attempts == nil {
		return 1
	}
	return *r.Attempts
}

func (u *Upstream) setDefaults() {
	if u.LoadBalancing == "" {
		u.LoadBalancing = LBRoundRobin
	}
	if u.ConnectTimeout == 0 {
		u.ConnectTimeout = 5 * time.Second
	}
	if u.ResponseTimeout == 0 {
		u.ResponseTimeout = 60 * time.Second
	}
	if u.StreamIdleTimeout == 0 {
		u.StreamIdleTimeout = 5 * time.Minute
	}
	if u.IdleConnTimeout == 0 {
		u.IdleConnTimeout = 90 * time.Second
	}
	if u.MaxIdleConns == 0 {
		u.MaxIdleConns = 256
	}
	if u.TLS.SPIFFE() && u.MaxConnectionAge == 0 {
		u.MaxConnectionAge = 5 * time.Minute
	}
	if len(u.Retries.On) == 0 {
		u.Retries.On = []string{"connect_failure"}
	}
	if h := u.HealthCheck; h != nil {
		if h.Path == "" {
			h.Path = "/"
		}
		if h.Interval == 0 {
			h.Interval = 10 * time.Second
		}
		if h.Timeout == 0 {
			h.Timeout = 2 * time.Second
		}
		if h.HealthyThreshold == 0 {
			h.HealthyThreshold = 2
		}
		if h.UnhealthyThreshold == 0 {
			h.UnhealthyThreshold = 3
		}
		if h.ExpectedStatus == "" {
			h.ExpectedStatus = "200-399"
		}
	}
	o := &u.OutlierDetection
	if o.ConsecutiveFailures == 0 {
		o.ConsecutiveFailures = 5
	}
	if o.EjectionTime == 0 {
		o.EjectionTime = 30 * time.Second
	}
	if o.MaxEjectionPercent == 0 {
		o.MaxEjectionPercent = 50
	}
}

func (c *Config) validateUpstreams(v *validator) {
	names := make([]string, len(c.Upstreams))
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		names[i] = u.Name
		u.validate(v.index("upstreams", i))
	}
	v.unique("upstreams", "upstream", names)
}

func (u *Upstream) validate(v *validator) {
	if u.Name == "" {
		v.addf("name", "is required (routes refer to it, e.g. \"details\")")
	}
	if len(u.Endpoints) == 0 {
		v.addf("endpoints", "needs at least one host:port")
	}
	for i, e := range u.Endpoints {
		if strings.Contains(e, "://") {
			v.addf(fmt.Sprintf("endpoints[%d]", i), "%q must be host:port without a scheme (set tls: for HTTPS)", e)
			continue
		}
		v.hostPort(fmt.Sprintf("endpoints[%d]", i), e)
	}
	v.oneOf("load_balancing", u.LoadBalancing, LBRoundRobin, LBLeastRequests)
	for key, d := range map[string]time.Duration{
		"connect_timeout": u.ConnectTimeout, "response_timeout": u.ResponseTimeout,
		"stream_idle_timeout": u.StreamIdleTimeout,
		"idle_conn_timeout":   u.IdleConnTimeout, "max_connection_age": u.MaxConnectionAge,
	} {
		if d < 0 {
			v.addf(key, "%s must not be negative", d)
		}
	}
	if u.MaxIdleConns < 0 {
		v.addf("max_idle_conns", "%d must not be negative", u.MaxIdleConns)
	}
	if n := u.Retries.RetryAttempts(); n < 0 || n > 5 {
		v.addf("retries.attempts", "%d is out of range (0-5)", n)
	}
	for i, on := range u.Retries.On {
		v.oneOf(fmt.Sprintf("retries.on[%d]", i), on, "connect_failure", "reset", "502", "503", "504")
	}
	if h := u.HealthCheck; h != nil {
		hv := v.at("health_check")
		if !strings.HasPrefix(h.Path, "/") {
			hv.addf("path", "%q must start with /", h.Path)
		}
		if h.Interval < 100*time.Millisecond {
			hv.addf("interval", "%s is too short (at least 100ms)", h.Interval)
		}
		if h.Timeout <= 0 || h.Timeout > h.Interval {
			hv.addf("timeout", "%s must be positive and at most interval (%s)", h.Timeout, h.Interval)
		}
		if h.HealthyThreshold < 1 || h.UnhealthyThreshold < 1 {
			hv.addf("", "healthy_threshold and unhealthy_threshold must be at least 1")
		}
		if _, _, err := ParseStatusRange(h.ExpectedStatus); err != nil {
			hv.addf("expected_status", "%q %v", h.ExpectedStatus, err)
		}
	}
	o := u.OutlierDetection
	if o.ConsecutiveFailures < 0 {
		v.addf("outlier_detection.consecutive_failures", "%d must not be negative", o.ConsecutiveFailures)
	}
	if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
		v.addf("outlier_detection.max_ejection_percent", "%d is out of range (0-100)", o.MaxEjectionPercent)
	}
	if t := u.TLS; t != nil {
		tv := v.at("tls")
		if t.CAFile != "" {
			tv.file("ca_file", t.CAFile)
		}
		if (t.ClientCert == "") != (t.ClientKey == "") {
			tv.addf("", "client_cert and client_key go together")
		}
		if t.ClientCert != "" {
			tv.file("client_cert", t.ClientCert)
			tv.file("client_key", t.ClientKey)
		}
		n := 0
		if t.SPIFFEID != "" {
			n++
		}
		if len(t.SPIFFEIDs) > 0 {
			n++
		}
		if t.TrustDomain != "" {
			n++
		}
		if n > 1 {
			tv.addf("", "set only one of spiffe_id, spiffe_ids, trust_domain")
		}
		if t.SPIFFE() && (t.ClientCert != "" || t.CAFile != "") {
			tv.addf("", "SPIFFE upstreams use the gateway's SVID and trust bundle; remove ca_file/client_cert")
		}
		for i, id := range append([]string{t.SPIFFEID}, t.SPIFFEIDs...) {
			if id == "" {
				continue
			}
			key := "spiffe_id"
			if i > 0 {
				key = fmt.Sprintf("spiffe_ids[%d]", i-1)
			}
			if err := CheckSPIFFEID(id); err != nil {
				tv.addf(key, "%q %v", id, err)
			}
		}
	}
}

// ParseStatusRange parses "200", "200-399" or "2xx".
func ParseStatusRange(s string) (lo, hi int, err error) {
	s = strings.TrimSpace(s)
	if len(s) == 3 && strings.HasSuffix(s, "xx") && s[0] >= '1' && s[0] <= '5' {
		lo = int(s[0]-'0') * 100
		return lo, lo + 99, nil
	}
	a, b, isRange := strings.Cut(s, "-")
	if _, err := fmt.Sscanf(a, "%d", &lo); err != nil {
		return 0, 0, fmt.Errorf("is not a status or range (e.g. 200, 200-399, 2xx)")
	}
	hi = lo
	if isRange {
		if _, err := fmt.Sscanf(b, "%d", &hi); err != nil {
			return 0, 0, fmt.Errorf("is not a status or range (e.g. 200, 200-399, 2xx)")
		}
	}
	if lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("is out of range (100-599, low before high)")
	}
	return lo, hi, nil
}
