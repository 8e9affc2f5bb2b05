// Package upstream holds ztgate's upstream pools and the reverse proxy.
//
// A Pool is one configured upstream: its endpoints, a keep-alive
// connection pool (http.Transport) sized by max_idle_conns, load
// balancing (round_robin or least_requests), passive outlier ejection,
// optional active health checks, bounded retries and the proxy itself.
//
// Pools outlive config reloads: a Registry keys them by their config
// (and the bytes of the files it names), so a reload that leaves an
// upstream unchanged keeps its health state and idle connections. Each
// reload gets a Set (name → *Pool) that belongs to one config snapshot;
// releasing the Set retires the pools no newer Set uses, and a retired
// pool closes its connections once its in-flight requests finish.
//
// Proxy returns failures as *Error values; Status and WriteError map
// them to 502/503/504 in one place, with a short body that names only
// the request id.
package upstream

// Log field names, as documented in docs/upstreams.md.
const (
	LogUpstream = "upstream"
	LogEndpoint = "endpoint"
	LogReason   = "reason"
	LogError    = "error"
	LogHealthy  = "healthy"
)
