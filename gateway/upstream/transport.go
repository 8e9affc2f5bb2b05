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

// newTransport builds the keep-alive pool of one upstream. Every endpoint
// of the upstream is a "host" of the transport, so max_idle_conns applies
// per endpoint.
func newTransport(u *configs.Upstream, tlsConf *tls.Config, ages *connAges) *http.Transport {
	dialer := &net.Dialer{Timeout: u.ConnectTimeout, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:                  nil, // never the environment's HTTP proxy
		MaxIdleConnsPerHost:    u.MaxIdleConns,
		IdleConnTimeout:        u.IdleConnTimeout,
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true, // pass Accept-Encoding and bodies through untouched
		MaxResponseHeaderBytes: 1 << 20,
		WriteBufferSize:        16 << 10,
		ReadBufferSize:         16 << 10,
	}
	plainDial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &connectError{err: err}
		}
		return ages.wrap(c), nil
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
			tc := tls.Client(ages.wrap(raw), conf)
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, &connectError{tls: true, err: err}
			}
			return tc, nil
		}
	}
	t.Protocols = &protos
	return t
}

// connAges implements max_connection_age: every pooled connection is
// stamped when dialed; once older than the age it is marked expired, an
// HTTP/1 request that gets it asks for "Connection: close" so it is not
// reused, and idle connections of the pool are closed.
type connAges struct {
	maxAge  time.Duration
	expired func() // called (from a timer) when a connection expires
}

type ageConn struct {
	net.Conn
	expired atomic.Bool
	timer   *time.Timer
}

func (a *connAges) wrap(c net.Conn) net.Conn {
	if a == nil || a.maxAge <= 0 {
		return c
	}
	ac := &ageConn{Conn: c}
	ac.timer = time.AfterFunc(a.maxAge, func() {
		ac.expired.Store(true)
		a.expired()
	})
	return ac
}

func (c *ageConn) Close() error {
	c.timer.Stop()
	return c.Conn.Close()
}

// isExpired reports whether conn (as seen by httptrace.GotConn: the
// ageConn itself, or a *tls.Conn over one) has outlived max_connection_age.
func isExpired(conn net.Conn) bool {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	ac, ok := conn.(*ageConn)
	return ok && ac.expired.Load()
}
