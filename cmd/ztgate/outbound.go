package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/dnsguard"
	"github.com/ztgate/ztgate/dnsguard/dot"
	"github.com/ztgate/ztgate/egress"
)

// outbound runs the DNS guard and the egress proxy. Either can be
// switched on or off by a reload; egress always asks the DNS guard in
// use at the time of the connection.
type outbound struct {
	log *slog.Logger
	reg prometheus.Registerer

	mu       sync.RWMutex
	dns      *dnsguard.Server
	egress   *egress.Proxy
	fallback egress.Resolver // egress.resolver, when no DNS guard runs
}

var (
	_ egress.Resolver        = (*outbound)(nil)
	_ egress.ResolvedChecker = (*outbound)(nil)
)

// apply starts, reconfigures or stops each part for cfg. DNS goes first
// so egress resolves through the new guard.
func (o *outbound) apply(cfg *configs.Config) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.fallback = egress.NetResolver(cfg.Egress.Resolver.Address, cfg.Egress.Resolver.Timeout)
	switch {
	case cfg.DNS.Enabled() && o.dns == nil:
		s, err := dnsguard.New(cfg, dnsguard.Deps{Logger: o.log, Metrics: o.reg, DialTLS: (&dot.Dialer{}).Dial})
		if err != nil {
			return err
		}
		if err := s.Start(); err != nil {
			return fmt.Errorf("%s: dns: %w", cfg.File, err)
		}
		o.dns = s
	case cfg.DNS.Enabled():
		if err := o.dns.Apply(cfg); err != nil {
			return err
		}
	case o.dns != nil:
		o.shutdownDNS()
	}
	switch {
	case cfg.Egress.Enabled() && o.egress == nil:
		p, err := egress.New(cfg, egress.Deps{Logger: o.log, Metrics: o.reg, Resolver: o, Resolved: o})
		if err != nil {
			return err
		}
		if err := p.Start(); err != nil {
			return fmt.Errorf("%s: egress: %w", cfg.File, err)
		}
		o.egress = p
	case cfg.Egress.Enabled():
		if err := o.egress.Apply(cfg); err != nil {
			return err
		}
	case o.egress != nil:
		o.shutdownEgress()
	}
	return nil
}

func (o *outbound) shutdownDNS() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o.dns.Shutdown(ctx)
	o.dns = nil
}

func (o *outbound) shutdownEgress() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o.egress.Shutdown(ctx)
	o.egress = nil
}

func (o *outbound) shutdown(ctx context.Context) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.egress != nil {
		o.egress.Shutdown(ctx)
		o.egress = nil
	}
	if o.dns != nil {
		o.dns.Shutdown(ctx)
		o.dns = nil
	}
}

// Resolve resolves for egress through the DNS guard (same policy, cache
// and answer records as the workloads' own lookups), or egress.resolver
// when no DNS guard runs.
func (o *outbound) Resolve(ctx context.Context, client netip.Addr, name string) ([]netip.Addr, error) {
	o.mu.RLock()
	d, fb := o.dns, o.fallback
	o.mu.RUnlock()
	if d != nil {
		return d.Resolve(ctx, client, name)
	}
	return fb.Resolve(ctx, client, name)
}

// Resolved reports whether the DNS guard handed addr to client for name.
// Without a DNS guard nothing was handed out: false (fail closed).
func (o *outbound) Resolved(client netip.Addr, name string, addr netip.Addr) bool {
	o.mu.RLock()
	d := o.dns
	o.mu.RUnlock()
	return d != nil && d.Resolved(client, name, addr)
}

// adminHandler serves a part's admin endpoint, or 404 when it is off.
func (o *outbound) adminHandler(part string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.RLock()
		var h http.Handler
		switch {
		case part == "dns" && o.dns != nil:
			h = o.dns.AdminHandler()
		case part == "egress" && o.egress != nil:
			h = o.egress.AdminHandler()
		}
		o.mu.RUnlock()
		if h == nil {
			http.Error(w, part+" is not configured", http.StatusNotFound)
			return
		}
		http.StripPrefix("/"+part, h).ServeHTTP(w, r)
	})
}
