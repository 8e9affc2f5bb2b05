package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/ztgate/ztgate/accel"
	"github.com/ztgate/ztgate/authn/jwt"
	"github.com/ztgate/ztgate/authn/peer"
	"github.com/ztgate/ztgate/authn/svid"
	"github.com/ztgate/ztgate/authz"
	"github.com/ztgate/ztgate/authz/extauthz"
	"github.com/ztgate/ztgate/authz/rego"
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
	keys      *jwt.KeyCache  // JWKS caches, shared by every snapshot
	identity  *svid.Source   // the gateway's SPIFFE SVID and trust bundles
	accel     *accel.Engine  // private-key offload for every served certificate
	tickets   *accel.Tickets // session-ticket keys shared by all listeners
	out       *outbound      // DNS guard and egress proxy
}

func newComponents(cfg *configs.Config, log *slog.Logger, reg prometheus.Registerer) (*components, error) {
	c := &components{log: log, reg: reg, first: cfg, out: &outbound{log: log, reg: reg}}
	var err error
	// The accel engine and ticket keys are per process: changing accel:
	// takes a restart (docs/accel.md).
	c.accel, err = accel.New(cfg.Accel, accel.Deps{Logger: log, Metrics: reg})
	if err != nil {
		return nil, err
	}
	c.tickets, err = accel.NewTickets(cfg.Accel.Sessions, accel.Deps{Logger: log, Metrics: reg})
	if err != nil {
		c.accel.Close()
		return nil, err
	}
	c.certs, err = certs.New(cfg, certs.Deps{Logger: log, Metrics: reg, WrapCert: c.accel.Wrap, KeyLoader: c.accel.LoadKey})
	if err != nil {
		c.tickets.Close()
		c.accel.Close()
		return nil, err
	}
	um, err := upstream.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	c.identity, err = svid.New(cfg, svid.Deps{Logger: log, Metrics: reg})
	if err != nil {
		return nil, err
	}
	c.upstreams = upstream.NewRegistry(upstream.Deps{Logger: log, Metrics: um,
		SPIFFETLS: c.identity.UpstreamTLS, SPIFFEUnavailable: svid.ErrNoSVID})
	c.keys = jwt.NewKeyCache(jwt.Deps{Logger: log, Metrics: reg})
	return c, nil
}

// prepare runs before the gateway compiles cfg: the certificate manager
// must know the new listeners' names.
func (c *components) prepare(cfg *configs.Config) error {
	if cfg == c.first {
		return nil // New already applied it
	}
	if err := c.identity.Apply(cfg); err != nil {
		return err
	}
	return c.certs.Apply(cfg)
}

// apply publishes cfg to the components that run their own sockets.
func (c *components) apply(cfg *configs.Config) error {
	c.first = nil
	return c.out.apply(cfg)
}

func (c *components) shutdown(ctx context.Context) {
	c.out.shutdown(ctx)
	c.upstreams.Close()
	c.keys.Close()
	c.identity.Close()
	c.tickets.Close()
	c.accel.Close()
	c.certs.Stop()
}

func (c *components) registerAdmin(a *gateway.Admin) {
	a.AddReadyCheck("certificates", c.certs.Ready)
	a.AddReadyCheck("jwks", c.keys.Ready)
	a.AddReadyCheck("identity", c.identity.Ready)
	a.Handle("GET /identity", c.identity.AdminHandler())
	a.Handle("GET /dns/", c.out.adminHandler("dns"))
	a.Handle("GET /egress/", c.out.adminHandler("egress"))
	a.Handle("GET /certificates", c.certs.StatusHandler())
	a.Handle("GET /upstreams", c.upstreams.StatusHandler())
}

// gatewayID is the gateway's own SPIFFE ID ("" without an SVID).
func (c *components) gatewayID() string {
	sv, err := c.identity.GetX509SVID()
	if err != nil || sv == nil {
		return ""
	}
	return sv.ID.String()
}

// extensions compiles the per-snapshot pipeline parts for cfg: the
// upstream pool set, the JWT authenticator, the authorization engine,
// each listener's client-certificate settings and each route's stages.
func (c *components) extensions(cfg *configs.Config) (ext *gateway.Extension, err error) {
	p, err := compilePolicy(cfg, c.log, c.reg, c.keys, false)
	if err == nil {
		p.bundles, p.gatewayID, p.tickets = c.identity.Bundles(), c.gatewayID, c.tickets
	}
	if err != nil {
		return nil, err
	}
	set, err := c.upstreams.Update(cfg.Upstreams)
	if err != nil {
		p.release()
		return nil, fmt.Errorf("%s: upstreams: %w", cfg.File, err)
	}
	return &gateway.Extension{
		Stages:       p.stages,
		ConfigureTLS: p.configureTLS,
		Forward:      forwarder(set),
		Ready: func() error {
			if !set.HealthKnown() {
				return fmt.Errorf("upstream health checks have not completed yet")
			}
			return nil
		},
		Release: func() {
			set.Release()
			p.release()
		},
	}, nil
}

// policy is one snapshot's compiled authentication and authorization.
type policy struct {
	jwt       *jwt.Authenticator
	authz     *authz.Engine
	bundles   x509bundle.Source // Workload API / federated bundles for client certificates
	gatewayID func() string     // the gateway's SPIFFE ID, for XFCC By=
	tickets   *accel.Tickets    // session-ticket keys (nil when validating)
}

func compilePolicy(cfg *configs.Config, log *slog.Logger, reg prometheus.Registerer, keys *jwt.KeyCache, offline bool) (*policy, error) {
	j, err := jwt.New(cfg, jwt.Deps{Logger: log, Keys: keys, Offline: offline})
	if err != nil {
		return nil, err
	}
	z, err := authz.New(cfg, authz.Deps{Logger: log, Metrics: reg, Rego: rego.Compiler, HTTP: extauthz.Factory})
	if err != nil {
		j.Close()
		return nil, err
	}
	return &policy{jwt: j, authz: z}, nil
}

func (p *policy) release() {
	p.jwt.Close()
	p.authz.Close()
}

func (p *policy) stages(l *configs.Listener, r *configs.Route) ([]gateway.Stage, error) {
	st, err := newPolicyStage(l, r, p.jwt, p.authz, p.gatewayID)
	if err != nil {
		return nil, err
	}
	return []gateway.Stage{st}, nil
}

// configureTLS applies the listener's peer authentication (client
// certificates) to its per-snapshot TLS config.
func (p *policy) configureTLS(l *configs.Listener, tc *tls.Config) error {
	s, err := peer.FromConfig(l.PeerAuthentication, p.bundles)
	if err != nil {
		return err
	}
	s.Apply(tc)
	if p.tickets != nil {
		// After the client-certificate settings: Register chains its
		// resumption counter onto VerifyConnection.
		p.tickets.Register(tc)
	}
	return nil
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
	p, err := compilePolicy(cfg, slog.New(slog.DiscardHandler), nil, nil, true)
	if err != nil {
		return err
	}
	defer p.release()
	_, err = gateway.Compile(cfg, gateway.Deps{Certs: dryCerts{}, Extensions: func(*configs.Config) (*gateway.Extension, error) {
		return &gateway.Extension{Stages: p.stages, ConfigureTLS: p.configureTLS}, nil
	}})
	return err
}

// dryCerts stands in for the certificate manager when validating: the
// certificate sources were checked by certs.Check.
type dryCerts struct{}

func (dryCerts) TLSConfig(string) (*tls.Config, error)               { return &tls.Config{}, nil }
func (dryCerts) HTTPChallengeHandler(next http.Handler) http.Handler { return next }
func (dryCerts) Ready() error                                        { return nil }
