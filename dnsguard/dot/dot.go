// Package dot dials DNS-over-TLS (RFC 7858) upstreams for dnsguard. It is
// the only dnsguard package that knows TLS; cmd/ztgate passes Dialer.Dial
// to dnsguard.Deps.DialTLS.
package dot

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"
)

// Dialer opens TLS connections to DoT resolvers.
type Dialer struct {
	// RootCAs verifies the resolvers' certificates; nil uses the system roots.
	RootCAs *x509.CertPool
	// Timeout bounds the TCP connect plus handshake. Default 5s.
	Timeout time.Duration
}

// Dial connects to addr and completes a TLS 1.2+ handshake that checks
// the certificate against serverName (the host of addr when empty).
func (d *Dialer) Dial(ctx context.Context, addr, serverName string) (net.Conn, error) {
	if serverName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dot: %q: %w", addr, err)
		}
		serverName = host
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	td := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: timeout},
		Config: &tls.Config{
			ServerName: serverName,
			RootCAs:    d.RootCAs,
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{"dot"},
		},
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := td.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dot: %s: %w", addr, err)
	}
	return c, nil
}
