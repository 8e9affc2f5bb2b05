package egress

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/ztgate/ztgate/configs"
)

// Mode is a listener mode; String matches the config spelling.
type Mode uint8

const (
	ModeConnect Mode = iota + 1
	ModeTransparent
	ModeHTTP
)

func (m Mode) String() string {
	switch m {
	case ModeConnect:
		return configs.EgressConnect
	case ModeTransparent:
		return configs.EgressTransparent
	case ModeHTTP:
		return configs.EgressHTTP
	}
	return "unknown"
}

func parseMode(s string) (Mode, error) {
	switch s {
	case configs.EgressConnect:
		return ModeConnect, nil
	case configs.EgressTransparent:
		return ModeTransparent, nil
	case configs.EgressHTTP:
		return ModeHTTP, nil
	}
	return 0, fmt.Errorf("mode %q is not connect, transparent or http", s)
}

// Action is a rule's action; String matches the config spelling.
type Action uint8

const (
	ActionAllow Action = iota + 1
	ActionDeny
)

func (a Action) String() string {
	if a == ActionDeny {
		return configs.EgressDeny
	}
	return configs.EgressAllow
}

// snapshot is the compiled, immutable egress config. One is published in
// Proxy.rt; every connection loads it once and keeps it to the end.
type snapshot struct {
	listeners map[string]*listenerRT // by listenerKey
	deny      []*rule                // DENY rules, in config order
	allow     []*rule                // ALLOW rules, in config order
	resolvers map[string]bool        // public DoH/DoT names still denied
	noSNI     bool                   // allow ClientHellos without SNI
	ech       bool                   // allow ClientHellos with ECH
	helloTO   time.Duration
	helloMax  int
	requireDG bool
	resolver  Resolver
	lim       configs.EgressLimits
}

type listenerRT struct {
	name     string
	address  string
	mode     Mode
	modeName string      // mode.String(), for the records
	tls      *tls.Config // non-nil for mTLS listeners
	m        *listenerMetrics
}

// bind gives every listener its pre-bound metric series. The series live
// in the process-lifetime collectors, so binding again after a reload
// finds the same ones.
func (rt *snapshot) bind(m *metrics) {
	for _, lr := range rt.listeners {
		lr.m = m.forListener(lr.name)
	}
}

// listenerKey identifies a socket across reloads: its address, or for
// port 0 (a fresh port each time it is opened) its name and address.
func listenerKey(name, address string) string {
	if strings.HasSuffix(address, ":0") {
		return name + "|" + address
	}
	return address
}

// rule is a compiled egress rule.
type rule struct {
	name     string
	action   Action
	anySrc   bool
	groups   []netip.Prefix
	ids      []string // exact SPIFFE IDs
	idPrefix []string // "spiffe://td/path/" from "spiffe://td/path/*"
	anyName  bool
	exact    map[string]bool
	suffixes []string // ".example.com" from "*.example.com"
	cidrs    []netip.Prefix
	ports    map[uint16]bool // nil: any port (DENY rules without ports)
	tls      bool
}

// compile turns a validated config into a runtime. It reads the mTLS
// files; it opens no sockets.
func compile(cfg *configs.Config, deps *Deps) (*snapshot, error) {
	e := &cfg.Egress
	rt := &snapshot{
		listeners: map[string]*listenerRT{},
		resolvers: map[string]bool{},
		noSNI:     e.ClientHello.NoSNI == configs.HelloAllow,
		ech:       e.ClientHello.ECH == configs.HelloAllow,
		helloTO:   e.ClientHello.Timeout,
		helloMax:  e.ClientHello.MaxBytes,
		requireDG: e.RequireDNSGuard,
		resolver:  deps.Resolver,
		lim:       e.Limits,
	}
	if rt.resolver == nil {
		rt.resolver = newNetResolver(e.Resolver.Address, e.Resolver.Timeout)
	}
	if rt.requireDG && deps.Resolved == nil {
		return nil, errors.New("egress.require_dns_guard is true but no dnsguard is running (configure dns: or set require_dns_guard: false)")
	}
	var errs []error
	for i, l := range e.Listeners {
		m, err := parseMode(l.Mode)
		if err != nil {
			errs = append(errs, fmt.Errorf("egress.listeners[%d]: %w", i, err))
			continue
		}
		lr := &listenerRT{name: l.Name, address: l.Address, mode: m, modeName: m.String()}
		if l.MTLS != nil {
			tc, err := loadMTLS(l.MTLS)
			if err != nil {
				errs = append(errs, fmt.Errorf("egress.listeners[%d].mtls: %w", i, err))
				continue
			}
			lr.tls = tc
		}
		rt.listeners[listenerKey(l.Name, l.Address)] = lr
	}
	groups := map[string][]netip.Prefix{}
	for _, g := range e.Groups {
		for _, c := range g.CIDRs {
			p, err := configs.ParsePrefix(c)
			if err != nil {
				errs = append(errs, fmt.Errorf("egress.groups %q: %w", g.Name, err))
				continue
			}
			groups[g.Name] = append(groups[g.Name], p)
		}
	}
	for i := range e.Rules {
		r, err := compileRule(&e.Rules[i], groups)
		if err != nil {
			errs = append(errs, fmt.Errorf("egress.rules[%d]: %w", i, err))
			continue
		}
		if r.action == ActionDeny {
			rt.deny = append(rt.deny, r)
		} else {
			rt.allow = append(rt.allow, r)
		}
	}
	if e.PublicResolvers.DenyEnabled() {
		except := map[string]bool{}
		for _, n := range e.PublicResolvers.Except {
			if nn, err := configs.NormalizeEgressName(n); err == nil {
				except[nn] = true
			}
		}
		for _, n := range publicResolvers {
			if !except[n] {
				rt.resolvers[n] = true
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return rt, nil
}

func compileRule(c *configs.EgressRule, groups map[string][]netip.Prefix) (*rule, error) {
	r := &rule{name: c.Name, action: ActionAllow, anySrc: len(c.From) == 0, exact: map[string]bool{}, tls: c.TLSOn()}
	if c.Action == configs.EgressDeny {
		r.action = ActionDeny
	}
	for _, f := range c.From {
		switch {
		case strings.HasPrefix(f, "spiffe://") && strings.HasSuffix(f, "/*"):
			r.idPrefix = append(r.idPrefix, strings.TrimSuffix(f, "*"))
		case strings.HasPrefix(f, "spiffe://"):
			r.ids = append(r.ids, f)
		default:
			ps, ok := groups[f]
			if !ok {
				return nil, fmt.Errorf("from: group %q is not defined", f)
			}
			r.groups = append(r.groups, ps...)
		}
	}
	for _, s := range c.SNI {
		n, err := configs.NormalizeEgressPattern(s)
		if err != nil {
			return nil, fmt.Errorf("sni %q: %w", s, err)
		}
		switch {
		case n == "*":
			r.anyName = true
		case strings.HasPrefix(n, "*."):
			r.suffixes = append(r.suffixes, n[1:])
		default:
			r.exact[n] = true
		}
	}
	for _, s := range c.CIDRs {
		p, err := configs.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("cidrs %q: %w", s, err)
		}
		r.cidrs = append(r.cidrs, p)
	}
	if len(c.Ports) > 0 {
		r.ports = map[uint16]bool{}
		for _, p := range c.Ports {
			r.ports[uint16(p)] = true
		}
	}
	return r, nil
}

func loadMTLS(m *configs.EgressMTLS) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(m.Cert, m.Key)
	if err != nil {
		return nil, fmt.Errorf("cert/key: %w", err)
	}
	pem, err := os.ReadFile(m.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("client_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("client_ca %q: no PEM certificates found", m.ClientCA)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		NextProtos:   []string{"http/1.1"},
	}, nil
}
