package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/ztgate/ztgate/authn"
	"github.com/ztgate/ztgate/authn/jwt"
	"github.com/ztgate/ztgate/authn/peer"
	"github.com/ztgate/ztgate/authz"
	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/gateway"
)

// Access-log fields added by the policy stage (docs/observability.md).
const (
	FieldPrincipal        = "principal"
	FieldRequestPrincipal = "request_principal"
	FieldDecision         = "decision"
	FieldPolicy           = "policy"
	FieldRule             = "rule"
	FieldAuthzReason      = "authz_reason"
)

// policyStage is the request pipeline between routing and the upstream,
// in the order fixed here: peer identity (client certificate) → request
// authentication (JWT) → authorization. It is compiled once per route
// and listener; a request builds the authz attributes once.
type policyStage struct {
	listener  *configs.Listener
	route     *configs.Route
	port      int
	routeMode peer.Mode // per-route peer_authentication override
	fcc       string    // forward_client_cert mode
	gatewayID func() string
	jwt       *jwt.Authenticator
	authz     *authz.Engine
}

var _ gateway.Stage = (*policyStage)(nil)

func newPolicyStage(l *configs.Listener, r *configs.Route, j *jwt.Authenticator, z *authz.Engine, gatewayID func() string) (*policyStage, error) {
	s := &policyStage{listener: l, route: r, jwt: j, authz: z, gatewayID: gatewayID,
		fcc: l.PeerAuthentication.ForwardClientCert}
	if _, p, err := net.SplitHostPort(l.Address); err == nil {
		s.port, _ = strconv.Atoi(p)
	}
	mode := l.PeerAuthentication.Mode
	if r.PeerAuthentication != "" {
		mode = r.PeerAuthentication
	}
	m, err := peer.ParseMode(mode)
	if err != nil {
		return nil, err
	}
	s.routeMode = m
	return s, nil
}

func (s *policyStage) Check(req *gateway.Request) error {
	r := req.HTTP
	// 1. Who is the peer? The certificate was verified at the handshake
	// against the listener's trust bundles.
	var p *authn.Peer
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		var err error
		if p, err = peer.FromConnectionState(r.TLS); err != nil {
			return &gateway.Denial{Status: http.StatusForbidden, Message: "client certificate not accepted", Reason: "peer_invalid", Cause: err}
		}
		req.LogAttrs = append(req.LogAttrs, slog.String(FieldPrincipal, p.Principal))
	}
	if err := peer.Require(s.routeMode, p); err != nil {
		return &gateway.Denial{Status: http.StatusForbidden, Message: "client certificate required", Reason: "peer_required", Cause: err}
	}
	by := ""
	if s.gatewayID != nil {
		by = s.gatewayID()
	}
	peer.ForwardClientCert(r.Header, s.fcc, p, by)

	// 2. Who is the caller? A present but invalid token is 401; no token
	// passes, and authorization decides.
	var id *authn.Identity
	if s.jwt != nil {
		var err error
		id, err = s.jwt.Authenticate(r, s.route.Name)
		if err != nil {
			d := &gateway.Denial{Status: http.StatusUnauthorized, Message: "invalid token",
				Reason: "jwt_" + jwt.ReasonOf(err).String(), Cause: err,
				Headers: http.Header{"Www-Authenticate": {jwt.WWWAuthenticate}}}
			for _, a := range jwt.LogAttrs(err) {
				if a.Key != "reason" {
					req.LogAttrs = append(req.LogAttrs, a)
				}
			}
			return d
		}
		if id != nil {
			req.LogAttrs = append(req.LogAttrs, slog.String(FieldRequestPrincipal, id.RequestPrincipal))
		}
	}

	// 3. May they? Every request is decided and recorded, allowed or not.
	if s.authz == nil {
		return nil
	}
	a := s.attributes(req, p, id)
	d := s.authz.Decide(r.Context(), a)
	decision := "allow"
	if !d.Allowed {
		decision = "deny"
	}
	req.LogAttrs = append(req.LogAttrs, slog.String(FieldDecision, decision))
	if d.Policy != "" {
		req.LogAttrs = append(req.LogAttrs, slog.String(FieldPolicy, d.Policy), slog.Int(FieldRule, d.Rule))
	}
	for _, h := range d.ResponseHeaders {
		if req.ResponseHeaders == nil {
			req.ResponseHeaders = http.Header{}
		}
		req.ResponseHeaders.Add(h.Name, h.Value)
	}
	if !d.Allowed {
		req.LogAttrs = append(req.LogAttrs, slog.String(FieldAuthzReason, d.Reason))
		den := &gateway.Denial{Status: d.Status, Message: "RBAC: access denied", Reason: "authz_denied",
			Cause: fmt.Errorf("%s", d.Reason)}
		if den.Status == 0 || den.Status == http.StatusOK {
			den.Status = http.StatusForbidden
		}
		if d.Body != "" {
			den.Body = []byte(d.Body)
		}
		return den
	}
	for _, h := range d.UpstreamHeaders {
		if req.UpstreamHeaders == nil {
			req.UpstreamHeaders = http.Header{}
		}
		req.UpstreamHeaders.Add(h.Name, h.Value)
	}
	return nil
}

// attributes builds the request facts authz decides on, once.
func (s *policyStage) attributes(req *gateway.Request, p *authn.Peer, id *authn.Identity) *authz.Attributes {
	r := req.HTTP
	a := &authz.Attributes{
		RequestID:       req.RequestID,
		SourceIP:        req.PeerAddr.Addr(),
		SourcePort:      req.PeerAddr.Port(),
		RemoteIP:        req.ClientIP,
		Host:            r.Host,
		Method:          r.Method,
		Path:            r.URL.Path,
		RawQuery:        r.URL.RawQuery,
		Protocol:        r.Proto,
		Headers:         make(map[string][]string, len(r.Header)),
		DestinationPort: s.port,
		Listener:        s.listener.Name,
		Route:           s.route.Name,
		RouteLabels:     s.route.Labels,
	}
	for k, v := range r.Header {
		a.Headers[lowerHeader(k)] = v
	}
	if r.TLS != nil {
		a.SNI = r.TLS.ServerName
	}
	if p != nil {
		a.Peer = authz.Peer{Principal: p.Principal, TrustDomain: p.TrustDomain, Namespace: p.Namespace, ServiceAccount: p.ServiceAccount}
	}
	if id != nil {
		a.RequestPrincipal = id.RequestPrincipal
		a.Claims = id.Claims
		a.Audiences = id.Audiences
		a.Presenter = id.Presenter
		a.ClaimsMemo = id.Memo
	}
	return a
}

// commonHeaders maps the canonical spelling of frequent request headers to
// the lower case authz uses, so building the attributes does not allocate
// a new name for each of them on every request.
var commonHeaders = func() map[string]string {
	m := map[string]string{}
	for _, h := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Connection", "Content-Length", "Content-Type", "Cookie", "Forwarded", "If-Modified-Since",
		"If-None-Match", "Origin", "Pragma", "Proxy-Authorization", "Referer", "Te", "Traceparent",
		"Tracestate", "User-Agent", "X-Api-Key", "X-Forwarded-For", "X-Forwarded-Host",
		"X-Forwarded-Proto", "X-Real-Ip", "X-Request-Id", "X-Forwarded-Client-Cert",
	} {
		m[h] = strings.ToLower(h)
	}
	return m
}()

func lowerHeader(k string) string {
	if l, ok := commonHeaders[k]; ok {
		return l
	}
	return strings.ToLower(k)
}
