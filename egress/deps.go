package egress

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Resolver resolves a name on behalf of a client. dnsguard's Server
// implements it, so names and answers seen by the proxy are the ones the
// DNS guard allowed and recorded.
type Resolver interface {
	Resolve(ctx context.Context, client netip.Addr, name string) ([]netip.Addr, error)
}

// ResolvedChecker reports whether dnsguard answered name with addr to
// client (and the answer is still within its TTL). Used when
// egress.require_dns_guard is true.
type ResolvedChecker interface {
	Resolved(client netip.Addr, name string, addr netip.Addr) bool
}

// Deps are the process-lifetime things a Proxy uses.
type Deps struct {
	// Logger receives decision and close records (component=egress).
	// Nil discards them.
	Logger *slog.Logger
	// Metrics is where the ztgate_egress_* metrics are registered. Nil
	// uses a private registry.
	Metrics prometheus.Registerer
	// Resolver resolves names; nil uses a net.Resolver aimed at
	// egress.resolver.address (or the system configuration).
	Resolver Resolver
	// Resolved is required when egress.require_dns_guard is true.
	Resolved ResolvedChecker
	// Now is the clock for durations; nil uses time.Now.
	Now func() time.Time
}
