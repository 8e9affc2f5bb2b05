package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/ztgate/ztgate/configs"
)

// errNoSPIFFE is the cause when an upstream needs SPIFFE mTLS and the
// gateway has no SVID source.
var errNoSPIFFE = errors.New("the upstream needs SPIFFE mTLS but the gateway has no SVID source (configure identity.workload_api)")

// clientTLS builds the tls.Config for an upstream: from ca_file,
// client_cert/key and server_name, or from the SPIFFE seam. A nil config
// with a nil error means plain HTTP.
func clientTLS(u *configs.Upstream, deps Deps) (*tls.Config, error) {
	t := u.TLS
	if t == nil {
		return nil, nil
	}
	if t.SPIFFE() {
		if deps.SPIFFETLS == nil {
			return nil, errNoSPIFFE
		}
		c, err := deps.SPIFFETLS(t)
		if err != nil {
			return nil, fmt.Errorf("spiffe: %w", err)
		}
		if c == nil {
			return nil, errNoSPIFFE
		}
		c = c.Clone()
		if c.MinVersion < tls.VersionTLS12 {
			c.MinVersion = tls.VersionTLS12
		}
		if c.ServerName == "" {
			c.ServerName = t.ServerName
		}
		return c, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: %q holds no PEM certificate", t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.ClientCert != "" {
		cert, err := tls.LoadX509KeyPair(t.ClientCert, t.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("tls.client_cert: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// newGeneration builds the keep-alive pools of one upstream: an
// http.Transport, and for an upstream that speaks HTTP/1.1 only, the
// h1 fast path (h1Client) sharing its dialer. Every endpoint of the
// upstream is a "host" of the pools, so max_idle_conns applies per
// endpoint.
func newGeneration(u *configs.Upstream, tlsConf *tls.Config) *generation {
	t, dial := newTransport(u, tlsConf)
	g := &generation{t: t}
	if !u.HTTP2 && peekSupported {
		g.h1 = newH1Client(dial, u.MaxIdleConns, u.IdleConnTimeout)
	}
	return g
}

// newTransport builds the http.Transport of one upstream and returns
// the dial function it uses (TCP, or TCP and the TLS handshake).
func newTransport(u *configs.Upstream, tlsConf *tls.Config) (*http.Transport, func(ctx context.Context, network, addr string) (net.Conn, error)) {
	dialer := &net.Dialer{Timeout: u.ConnectTimeout, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:                  nil, // never the environment's HTTP proxy
		MaxIdleConnsPerHost:    u.MaxIdleConns,
		IdleConnTimeout:        u.IdleConnTimeout,
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true, // pass Accept-Encoding and bodies through untouched
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}
	plainDial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &connectError{err: err}
		}
		return c, nil
	}
	var protos http.Protocols
	switch {
	case tlsConf == nil && u.HTTP2:
		protos.SetUnencryptedHTTP2(true) // h2c with prior knowledge
		t.DialContext = plainDial
	case tlsConf == nil:
		protos.SetHTTP1(true)
		t.DialContext = plainDial
	default:
		protos.SetHTTP1(true)
		alpn := []string{"http/1.1"}
		if u.HTTP2 {
			protos.SetHTTP2(true)
			alpn = []string{"h2", "http/1.1"}
		}
		base := tlsConf.Clone()
		base.NextProtos = alpn
		t.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, u.ConnectTimeout)
			defer cancel()
			raw, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &connectError{err: err}
			}
			conf := base
			if conf.ServerName == "" {
				conf = base.Clone()
				host, _, _ := net.SplitHostPort(addr)
				conf.ServerName = host
			}
			tc := tls.Client(raw, conf)
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, &connectError{tls: true, err: err}
			}
			return tc, nil
		}
	}
	t.Protocols = &protos
	if t.DialTLSContext != nil {
		return t, t.DialTLSContext
	}
	return t, t.DialContext
}

// generation is one http.Transport of a pool. max_connection_age
// replaces the pool's generation periodically: new requests use the new
// one, and the old one closes its connections once its requests finish.
// This works alike for HTTP/1.1 and HTTP/2 connections, which net/http
// gives no per-connection control over.
type generation struct {
	t        *http.Transport
	h1       *h1Client // nil: every request goes through t
	inflight atomic.Int64
	retired  atomic.Bool
}

func (g *generation) acquire() { g.inflight.Add(1) }

func (g *generation) release() {
	if g.inflight.Add(-1) == 0 && g.retired.Load() {
		g.closeIdle()
	}
}

// closeIdle closes the idle connections of both pools. On a retired
// generation, h1 connections returned later are closed too.
func (g *generation) closeIdle() {
	g.t.CloseIdleConnections()
	if g.h1 != nil {
		g.h1.closeIdle(g.retired.Load())
	}
}

// retire closes idle connections now, and the rest as their last request
// ends (release). A request that still starts on a retired generation
// is served; its connection closes when it is done.
func (g *generation) retire() {
	g.retired.Store(true)
	if g.h1 != nil {
		g.h1.closeIdle(true)
	}
	if g.inflight.Load() == 0 {
		g.t.CloseIdleConnections()
	}
}
