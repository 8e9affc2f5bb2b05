// Package extauthz is the external HTTP authorization CUSTOM provider: a
// forward-auth style call, as Envoy's ext_authz HTTP service makes it.
// The service receives the original method and path (appended to its
// URL's path) with the configured request headers and no body; a 2xx
// answer allows, any other status denies with that status and body.
// When the service cannot answer in time, fail_open decides.
package extauthz

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/ztgate/ztgate/authz"
	"github.com/ztgate/ztgate/configs"
)

// MaxBodyBytes bounds the deny body read from the service.
const MaxBodyBytes = 64 << 10

// Provider calls one authorization service. Safe for concurrent use.
type Provider struct {
	name     string
	base     *url.URL
	cfg      configs.HTTPProvider
	client   *http.Client
	include  []string
	toUp     []string
	toClient []string
}

var _ authz.CustomProvider = (*Provider)(nil)

// Factory is the authz.HTTPProviderFactory; pass it as authz.Deps.HTTP.
func Factory(name string, h *configs.HTTPProvider) (authz.CustomProvider, error) {
	return New(name, h)
}

var _ authz.HTTPProviderFactory = Factory

// New checks the provider config and builds its client.
func New(name string, h *configs.HTTPProvider) (*Provider, error) {
	u, err := url.Parse(h.URL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("url %q is not an http:// or https:// URL", h.URL)
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		return nil, fmt.Errorf("url %q: plain http is only allowed to a loopback address (use https://)", h.URL)
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 200 * time.Millisecond
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: timeout}).DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	p := &Provider{
		name: name, base: u, cfg: *h,
		client: &http.Client{Transport: tr, Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect is the service's answer, not something to follow
		}},
	}
	p.cfg.Timeout = timeout
	if p.cfg.StatusOnError == 0 {
		p.cfg.StatusOnError = http.StatusForbidden
	}
	for _, n := range h.IncludeRequestHeaders {
		p.include = append(p.include, strings.ToLower(n))
	}
	for _, n := range h.HeadersToUpstream {
		p.toUp = append(p.toUp, http.CanonicalHeaderKey(n))
	}
	for _, n := range h.HeadersToClient {
		p.toClient = append(p.toClient, http.CanonicalHeaderKey(n))
	}
	return p, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// Close releases idle connections (call when a reload drops the provider).
func (p *Provider) Close() { p.client.CloseIdleConnections() }

// Check asks the service about a.
func (p *Provider) Check(ctx context.Context, a *authz.Attributes) (authz.CustomResult, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	u := *p.base
	u.Path = strings.TrimSuffix(p.base.Path, "/") + a.Path
	u.RawPath = ""
	u.RawQuery = a.RawQuery
	method := a.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), http.NoBody)
	if err != nil {
		return p.failed(fmt.Errorf("build request: %v", err))
	}
	for _, n := range p.include {
		for _, v := range a.Headers[n] {
			req.Header.Add(n, v)
		}
	}
	req.Header.Set("X-Forwarded-Method", a.Method)
	req.Header.Set("X-Forwarded-Host", a.Host)
	uri := a.Path
	if a.RawQuery != "" {
		uri += "?" + a.RawQuery
	}
	req.Header.Set("X-Forwarded-Uri", uri)
	if a.RequestID != "" {
		req.Header.Set("X-Request-Id", a.RequestID)
	}
	if ip := a.SourceIP; ip.IsValid() && req.Header.Get("X-Forwarded-For") == "" {
		req.Header.Set("X-Forwarded-For", ip.String())
	}
	if a.Peer.Principal != "" {
		req.Header.Set("X-Forwarded-Client-Spiffe-Id", "spiffe://"+a.Peer.Principal)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return p.failed(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxBodyBytes))
		return authz.CustomResult{Allowed: true, UpstreamHeaders: pick(resp.Header, p.toUp), Reason: fmt.Sprintf("%s answered %d", p.name, resp.StatusCode)}, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
	if err != nil {
		return p.failed(fmt.Errorf("read deny body: %v", err))
	}
	status := resp.StatusCode
	if status < 200 || status > 599 || status < 400 && status >= 300 && resp.Header.Get("Location") == "" {
		status = http.StatusForbidden
	}
	var hdrs []authz.Header
	hdrs = pick(resp.Header, p.toClient)
	if status >= 300 && status < 400 {
		hdrs = append(hdrs, authz.Header{Name: "Location", Value: resp.Header.Get("Location")})
	}
	return authz.CustomResult{Allowed: false, Status: status, Body: string(body), ResponseHeaders: hdrs,
		Reason: fmt.Sprintf("%s answered %d", p.name, resp.StatusCode)}, nil
}

// failed applies fail_open and status_on_error to a call that got no answer.
func (p *Provider) failed(err error) (authz.CustomResult, error) {
	if p.cfg.FailOpen {
		return authz.CustomResult{Allowed: true, Reason: fmt.Sprintf("fail_open: %s unavailable: %v", p.name, err)}, nil
	}
	return authz.CustomResult{Status: p.cfg.StatusOnError}, fmt.Errorf("%s unavailable: %w", p.name, err)
}

func pick(h http.Header, names []string) []authz.Header {
	var out []authz.Header
	for _, n := range names {
		for _, v := range h.Values(n) {
			out = append(out, authz.Header{Name: n, Value: v})
		}
	}
	return out
}
