package svid

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/ztgate/ztgate/configs"
)

// ErrNoSVID is matched (errors.Is) by every *NoSVIDError: the gateway has
// no valid SVID, so SPIFFE upstreams cannot be reached (map to 503).
var ErrNoSVID = errors.New("no valid SVID")

// NoSVIDError says why the gateway has no usable SVID.
type NoSVIDError struct{ Reason string }

func (e *NoSVIDError) Error() string        { return "identity: no valid SVID: " + e.Reason }
func (e *NoSVIDError) Is(target error) bool { return target == ErrNoSVID }

// ErrPeerRejected is matched by *PeerIDError and *UntrustedPeerError: the
// upstream is not who it should be (map to 502).
var ErrPeerRejected = errors.New("upstream SPIFFE identity rejected")

// PeerIDError is a verified SVID with an ID the upstream config does not
// allow.
type PeerIDError struct {
	Presented spiffeid.ID
	Expected  string // as the config says: an ID, "one of [...]" or "any ID in trust domain ..."
}

func (e *PeerIDError) Error() string {
	return fmt.Sprintf("identity: upstream presented SPIFFE ID %s, expected %s", e.Presented, e.Expected)
}
func (e *PeerIDError) Is(target error) bool { return target == ErrPeerRejected }

// UntrustedPeerError is a certificate that is not a valid SVID of a
// trusted trust domain (no bundle, bad chain, expired, no SPIFFE ID).
type UntrustedPeerError struct {
	Expected string
	Err      error
}

func (e *UntrustedPeerError) Error() string {
	return fmt.Sprintf("identity: upstream certificate is not a valid SVID (expected %s): %v", e.Expected, e.Err)
}
func (e *UntrustedPeerError) Unwrap() error        { return e.Err }
func (e *UntrustedPeerError) Is(target error) bool { return target == ErrPeerRejected }

// Handshake failure reasons (metric label reason).
const (
	ReasonIDMismatch = "spiffe_id_mismatch"
	ReasonUntrusted  = "untrusted_certificate"
	ReasonNoSVID     = "no_svid"
)

// UpstreamTLS returns the client TLS config for a SPIFFE upstream: it
// presents the current SVID (read at every handshake, so new connections
// use a rotated SVID at once) and accepts only an upstream SVID that
// chains to the bundle of its trust domain and whose ID t allows
// (spiffe_id, spiffe_ids or trust_domain). Handshakes fail with
// *NoSVIDError when the gateway holds no valid SVID, *PeerIDError on a
// wrong ID (logged with both IDs) and *UntrustedPeerError otherwise.
//
// Verification is go-spiffe's: InsecureSkipVerify is set by
// tlsconfig.HookMTLSClientConfig only to replace hostname verification
// with SPIFFE ID verification in VerifyPeerCertificate.
func (s *Source) UpstreamTLS(t *configs.UpstreamTLS) (*tls.Config, error) {
	if !t.SPIFFE() {
		return nil, errors.New("identity: upstream TLS has no spiffe_id, spiffe_ids or trust_domain")
	}
	auth, expected, err := authorizerFor(t)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	tlsconfig.HookMTLSClientConfig(cfg, s, s, s.authorizer(auth, expected))
	spiffeVerify := cfg.VerifyPeerCertificate
	cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		// Fail closed before anything else: an upstream that does not ask
		// for a client certificate must not be reached without an SVID.
		if _, err := s.GetX509SVID(); err != nil {
			s.m.handshakeFailures.WithLabelValues(ReasonNoSVID).Inc()
			return err
		}
		err := spiffeVerify(raw, chains)
		if err == nil {
			return nil
		}
		var idErr *PeerIDError
		if errors.As(err, &idErr) {
			return err
		}
		s.m.handshakeFailures.WithLabelValues(ReasonUntrusted).Inc()
		if s.limiter.Allow() {
			s.log.Warn("identity: upstream certificate rejected", LogFieldExpected, expected, LogFieldError, err.Error())
		}
		return &UntrustedPeerError{Expected: expected, Err: err}
	}
	return cfg, nil
}

func authorizerFor(t *configs.UpstreamTLS) (tlsconfig.Authorizer, string, error) {
	switch {
	case t.SPIFFEID != "":
		id, err := spiffeid.FromString(t.SPIFFEID)
		if err != nil {
			return nil, "", fmt.Errorf("identity: spiffe_id %q: %w", t.SPIFFEID, err)
		}
		return tlsconfig.AuthorizeID(id), id.String(), nil
	case len(t.SPIFFEIDs) > 0:
		ids := make([]spiffeid.ID, len(t.SPIFFEIDs))
		for i, s := range t.SPIFFEIDs {
			id, err := spiffeid.FromString(s)
			if err != nil {
				return nil, "", fmt.Errorf("identity: spiffe_ids[%d] %q: %w", i, s, err)
			}
			ids[i] = id
		}
		return tlsconfig.AuthorizeOneOf(ids...), "one of [" + strings.Join(t.SPIFFEIDs, ", ") + "]", nil
	default:
		td, err := spiffeid.TrustDomainFromString(t.TrustDomain)
		if err != nil {
			return nil, "", fmt.Errorf("identity: trust_domain %q: %w", t.TrustDomain, err)
		}
		return tlsconfig.AuthorizeMemberOf(td), "any ID in trust domain " + td.Name(), nil
	}
}

// authorizer wraps a go-spiffe authorizer: a rejected ID is counted,
// logged with the presented and the expected ID, and returned as
// *PeerIDError.
func (s *Source) authorizer(inner tlsconfig.Authorizer, expected string) tlsconfig.Authorizer {
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if err := inner(id, chains); err != nil {
			s.m.handshakeFailures.WithLabelValues(ReasonIDMismatch).Inc()
			if s.limiter.Allow() {
				s.log.Warn("identity: upstream presented an unexpected SPIFFE ID", LogFieldPresented, id.String(), LogFieldExpected, expected)
			}
			return &PeerIDError{Presented: id, Expected: expected}
		}
		return nil
	}
}
