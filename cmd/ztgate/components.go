package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/gateway/certs"
	"github.com/ztgate/ztgate/gateway/upstream"
)

// components are the long-lived parts besides the gateway itself: each
// keeps its costly state (certificate cache, upstream pools, JWKS caches,
// SVID source, DNS cache) across reloads, keyed by its own config.
type components struct {
	log       *slog.Logger
	reg       prometheus.Registerer
	first     *configs.Config // the config New was built with
	certs     *certs.Manager
	upstreams *upstream.Registry
}

func newComponents(cfg *configs.Config, log *slog.Logger, reg prometheus.Registerer) (*components, error) {
	c := &components{log: log, reg: reg, first: cfg}
	var err error
	c.certs, err = certs.New(cfg, certs.Deps{Logger: log, Metrics: reg})
	if err != nil {
		return nil, err
	}
	um, err := upstream.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	c.upstreams = upstream.NewRegistry(upstream.Deps{Logger: log, Metrics: um})
	return c, nil
}

// prepare runs before the gateway compiles cfg: the certificate manager
// must know the new listeners' names.
func (c *components) prepare(cfg *configs.Config) error {
	if cfg == c.first {
		return nil // New already applied it
	}
	return c.certs.Apply(cfg)
}

// apply publishes cfg to the components that run their own sockets.
func (c *components) apply(cfg *configs.Config) error {
	c.first = nil
	return nil
}

func (c *components) shutdown(ctx context.Context) {
	c.upstreams.Close()
	c.certs.Stop()
}

func (c *components) registerAdmin(a *gateway.Admin) {
	a.AddReadyCheck("certificates", c.certs.Ready)
	a.Handle("GET /certificates", c.certs.StatusHandler())
	a.Handle("GET /upstreams", c.upstreams.StatusHandler())
}

// tlsHook is applied once to every listener socket's TLS config.
func (c *components) tlsHook(tc *tls.Config) {}

// extensions compiles the per-snapshot pipeline parts for cfg.
func (c *components) extensions(cfg *configs.Config) (*gateway.Extension, error) {
	set, err := c.upstreams.Update(cfg.Upstreams)
	if err != nil {
		return nil, fmt.Errorf("%s: upstreams: %w", cfg.File, err)
	}
	return &gateway.Extension{
		Forward: forwarder(set),
		Ready: func() error {
			if !set.HealthKnown() {
				return fmt.Errorf("upstream health checks have not completed yet")
			}
			return nil
		},
		Release: set.Release,
	}, nil
}

// forwarder proxies a routed request to its upstream pool.
func forwarder(set *upstream.Set) func(w http.ResponseWriter, req *gateway.Request) error {
	return func(w http.ResponseWriter, req *gateway.Request) error {
		pool, ok := set.Pool(req.Upstream)
		if !ok {
			return &gateway.Denial{Status: http.StatusServiceUnavailable, Message: "no healthy upstream", Reason: "unknown_upstream"}
		}
		info := &upstream.RequestInfo{
			ClientIP:        req.ClientIP,
			TrustedPeer:     req.PeerTrusted,
			Proto:           req.Proto,
			RequestID:       req.RequestID,
			Route:           req.Route,
			Timeout:         req.Timeout,
			RequestHeaders:  req.RouteHeaders,
			ResponseHeaders: req.RouteResponseHeaders,
		}
		for k, vs := range req.UpstreamHeaders {
			for _, v := range vs {
				info.Extra = append(info.Extra, upstream.Header{Name: k, Value: v})
			}
		}
		err := pool.Proxy(w, req.HTTP, info)
		if info.Endpoint != "" {
			req.LogAttrs = append(req.LogAttrs, slog.String("endpoint", info.Endpoint), slog.Int("attempts", info.Attempts))
		}
		if err != nil {
			return &gateway.Denial{Status: upstream.Status(err), Message: upstream.PublicMessage(err),
				Reason: upstream.Reason(err), Cause: err}
		}
		return nil
	}
}

// compileOnly is `ztgate validate`: everything a reload compiles, with
// nothing started and nothing written.
func compileOnly(cfg *configs.Config) error {
	_, err := gateway.Compile(cfg, gateway.Deps{Certs: dryCerts{}})
	return err
}

// dryCerts stands in for the certificate manager when validating: the
// certificate sources were checked by certs.Check.
type dryCerts struct{}

func (dryCerts) TLSConfig(string) (*tls.Config, error)               { return &tls.Config{}, nil }
func (dryCerts) HTTPChallengeHandler(next http.Handler) http.Handler { return next }
func (dryCerts) Ready() error                                        { return nil }
