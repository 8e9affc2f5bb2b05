package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"

	"github.com/caddyserver/certmagic"
)

// acmeTLS1 is the ALPN protocol of the ACME TLS-ALPN-01 challenge (RFC 8737).
const acmeTLS1 = "acme-tls/1"

// cipherSuites are the TLS 1.2 suites offered: ECDHE with AEAD only
// (TLS 1.3 suites are not configurable and all modern).
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// TLSConfig returns the server tls.Config of the named listener. The
// gateway sets NextProtos (and client-auth fields) on it. It reads the
// current certificates and min_version on every handshake, so the same
// value keeps working across Apply; keep it with the listener socket.
//
// MinVersion is TLS 1.2; a listener with min_version "1.3" refuses
// clients without TLS 1.3 in GetConfigForClient, which is also where an
// ACME TLS-ALPN-01 handshake (ALPN "acme-tls/1" only) is answered. A
// caller that needs its own GetConfigForClient must call this one first.
func (m *Manager) TLSConfig(listener string) (*tls.Config, error) {
	s := m.snap.Load()
	if s == nil || s.listeners[listener] == nil {
		return nil, fmt.Errorf("certs: listener %q has no tls in the config", listener)
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		CipherSuites:       slices.Clone(cipherSuites),
		GetCertificate:     func(h *tls.ClientHelloInfo) (*tls.Certificate, error) { return m.getCertificate(listener, h) },
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) { return m.configForClient(listener, h) },
	}, nil
}

func isACMEChallenge(h *tls.ClientHelloInfo) bool {
	return len(h.SupportedProtos) == 1 && h.SupportedProtos[0] == acmeTLS1 && h.ServerName != ""
}

func (m *Manager) configForClient(listener string, h *tls.ClientHelloInfo) (*tls.Config, error) {
	s := m.snap.Load()
	ls := s.listeners[listener]
	if ls == nil {
		return nil, fmt.Errorf("certs: listener %q has no tls any more", listener)
	}
	if isACMEChallenge(h) {
		a := ls.acme
		if a == nil && len(s.acme) > 0 {
			a = s.acme[0] // challenge state is shared by all ACME sources
		}
		if a == nil {
			return nil, fmt.Errorf("certs: acme-tls/1 handshake for %q but no ACME source is configured", h.ServerName)
		}
		return &tls.Config{
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{acmeTLS1},
			GetCertificate: a.cfg.GetCertificate,
		}, nil
	}
	if ls.minVersion == tls.VersionTLS13 && !slices.Contains(h.SupportedVersions, tls.VersionTLS13) {
		return nil, fmt.Errorf("certs: listener %q requires TLS 1.3 (min_version) and the client does not offer it", listener)
	}
	return nil, nil
}

func (m *Manager) getCertificate(listener string, h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	s := m.snap.Load()
	ls := s.listeners[listener]
	if ls == nil {
		return nil, fmt.Errorf("certs: listener %q has no tls any more", listener)
	}
	if isACMEChallenge(h) {
		cfg, err := m.configForClient(listener, h)
		if err != nil {
			return nil, err
		}
		return cfg.GetCertificate(h)
	}
	name := normalizeName(h.ServerName)
	sni := name != ""
	if !sni && h.Conn != nil {
		name = localIP(h.Conn)
	}
	cands := m.candidates(s, ls, name)
	if len(cands) == 0 && !sni && len(ls.names) > 0 {
		// No SNI and no certificate for the local address: serve the
		// first configured name's, as a default.
		cands = m.candidates(s, ls, ls.names[0])
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("certs: listener %q has no certificate for %q", listener, name)
	}
	c, err := certmagic.DefaultCertificateSelector(h, cands)
	if err != nil {
		return nil, err
	}
	return m.wrap(c)
}

// candidates are the cached certificates that listener ls may serve for
// name: of its own source, and (for managed sources) only for its names.
func (m *Manager) candidates(s *snapshot, ls *listenerState, name string) []certmagic.Certificate {
	if name == "" {
		return nil
	}
	if ls.source != SourceFiles && !ls.serves(name) {
		return nil
	}
	var out []certmagic.Certificate
	for _, c := range m.cache.AllMatchingCertificates(name) {
		if ls.accepts(s, c) {
			out = append(out, c)
		}
	}
	return out
}

func (ls *listenerState) serves(name string) bool {
	for _, n := range ls.names {
		if n == name || certmagic.MatchWildcard(name, n) {
			return true
		}
	}
	return false
}

func (ls *listenerState) accepts(s *snapshot, c certmagic.Certificate) bool {
	switch ls.source {
	case SourceFiles:
		return ls.fileHashes[c.Hash()]
	case SourceLocalCA:
		return s.ca != nil && s.ca.issued(c.Leaf)
	default:
		return !c.HasTag(tagFiles) && !(s.ca != nil && s.ca.issued(c.Leaf))
	}
}

// wrap returns the certificate to serve, passing it through WrapCert once
// per certificate (cached by hash); a new OCSP staple is copied over
// without wrapping again.
func (m *Manager) wrap(c certmagic.Certificate) (*tls.Certificate, error) {
	if v, ok := m.wrapped.Load(c.Hash()); ok {
		w := v.(*wrappedCert)
		if bytes.Equal(w.cert.OCSPStaple, c.OCSPStaple) {
			return w.cert, nil
		}
		cp := *w.cert
		cp.OCSPStaple = c.OCSPStaple
		m.wrapped.Store(c.Hash(), &wrappedCert{cert: &cp, names: w.names})
		return &cp, nil
	}
	m.wrapMu.Lock()
	defer m.wrapMu.Unlock()
	if v, ok := m.wrapped.Load(c.Hash()); ok {
		return v.(*wrappedCert).cert, nil
	}
	tc := c.Certificate // copy
	out := &tc
	if m.deps.WrapCert != nil {
		w, err := m.deps.WrapCert(&tc)
		if err != nil {
			m.log.Error("certificate: wrap for serving failed", slog.Any(LogName, c.Names), slog.String(LogError, err.Error()))
			return nil, fmt.Errorf("certs: wrap certificate for %v: %w", c.Names, err)
		}
		if w == nil {
			return nil, errors.New("certs: WrapCert returned no certificate")
		}
		out = w
	}
	m.wrapped.Store(c.Hash(), &wrappedCert{cert: out, names: slices.Clone(c.Names)})
	return out, nil
}

// pruneWrapped forgets wrapped certificates that left the cache
// (renewed, removed), so the map stays as small as the cache.
func (m *Manager) pruneWrapped() {
	m.wrapped.Range(func(k, v any) bool {
		w := v.(*wrappedCert)
		for _, n := range w.names {
			for _, c := range m.cache.AllMatchingCertificates(n) {
				if c.Hash() == k.(string) {
					return true
				}
			}
		}
		m.wrapped.Delete(k)
		return true
	})
}

func normalizeName(n string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(n), "."))
}

func localIP(c net.Conn) string {
	a := c.LocalAddr()
	if a == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return ""
	}
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i]
	}
	return host
}

func ipStrings(c *x509.Certificate) []string {
	out := make([]string, len(c.IPAddresses))
	for i, ip := range c.IPAddresses {
		out[i] = ip.String()
	}
	return out
}
