// Package peer authenticates ingress clients by their certificate, with
// the semantics of Istio's PeerAuthentication: STRICT requires a valid
// client certificate at the handshake, PERMISSIVE accepts clients with or
// without one (an invalid one still fails the handshake), DISABLE asks
// for none. Certificates are X.509-SVIDs verified against the bundle of
// their SPIFFE trust domain; the peer principal is the SPIFFE ID without
// "spiffe://", as Istio's source.principal.
package peer

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ztgate/ztgate/authn"
	"github.com/ztgate/ztgate/configs"
)

// Mode is a PeerAuthentication mode; String() is the config spelling.
type Mode int

// Modes, as Istio's PeerAuthentication.
const (
	Disable Mode = iota
	Permissive
	Strict
)

func (m Mode) String() string {
	switch m {
	case Strict:
		return configs.PeerStrict
	case Permissive:
		return configs.PeerPermissive
	default:
		return configs.PeerDisable
	}
}

// ParseMode parses STRICT, PERMISSIVE or DISABLE ("" is DISABLE).
func ParseMode(s string) (Mode, error) {
	switch s {
	case configs.PeerStrict:
		return Strict, nil
	case configs.PeerPermissive:
		return Permissive, nil
	case configs.PeerDisable, "":
		return Disable, nil
	}
	return Disable, fmt.Errorf("peer authentication mode %q is not valid (use STRICT, PERMISSIVE or DISABLE)", s)
}

// LoadBundles reads the PEM trust bundles of peer_authentication.trust_bundles.
// Several files for one trust domain are merged.
func LoadBundles(list []configs.TrustBundle) (*x509bundle.Set, error) {
	set := x509bundle.NewSet()
	for i, tb := range list {
		td, err := spiffeid.TrustDomainFromString(tb.TrustDomain)
		if err != nil {
			return nil, fmt.Errorf("trust_bundles[%d].trust_domain: %w", i, err)
		}
		b, err := x509bundle.Load(td, tb.File)
		if err != nil {
			return nil, fmt.Errorf("trust_bundles[%d].file: %w", i, err)
		}
		if prev, ok := set.Get(td); ok {
			for _, c := range b.X509Authorities() {
				prev.AddX509Authority(c)
			}
			continue
		}
		set.Add(b)
	}
	return set, nil
}

// TLSSettings are the client-certificate settings of one listener.
type TLSSettings struct {
	mode    Mode
	bundles x509bundle.Source
}

// ServerTLS returns the settings for a listener in mode, verifying
// client certificates against bundles (trust bundles from files, see
// LoadBundles, or a Workload API source). bundles may be nil only for
// DISABLE.
func ServerTLS(mode Mode, bundles x509bundle.Source) (*TLSSettings, error) {
	if mode != Disable && bundles == nil {
		return nil, fmt.Errorf("peer authentication %s needs trust bundles", mode)
	}
	return &TLSSettings{mode: mode, bundles: bundles}, nil
}

// Mode returns the listener's mode.
func (s *TLSSettings) Mode() Mode { return s.mode }

// ClientAuth is the tls.Config.ClientAuth for the mode. Go's own chain
// verification is not used (it knows no trust domains); VerifyConnection
// does the SPIFFE verification.
func (s *TLSSettings) ClientAuth() tls.ClientAuthType {
	switch s.mode {
	case Strict:
		return tls.RequireAnyClientCert
	case Permissive:
		return tls.RequestClientCert
	default:
		return tls.NoClientCert
	}
}

// Apply sets ClientAuth and VerifyConnection on a listener's (or a
// GetConfigForClient result's) tls.Config, keeping any VerifyConnection
// already there. VerifyConnection runs on every handshake, resumed ones
// included.
func (s *TLSSettings) Apply(c *tls.Config) {
	c.ClientAuth = s.ClientAuth()
	if s.mode == Disable {
		return
	}
	prev := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := s.VerifyConnection(cs); err != nil {
			return err
		}
		if prev != nil {
			return prev(cs)
		}
		return nil
	}
}

// VerifyConnection verifies the client certificate, if any, as an
// X.509-SVID: exactly one URI SAN holding a valid SPIFFE ID, a chain to
// the bundle of that ID's trust domain, a leaf that is not a CA.
func (s *TLSSettings) VerifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		if s.mode == Strict {
			return errors.New("peer: client certificate required (STRICT)")
		}
		return nil
	}
	if s.mode == Disable {
		return nil
	}
	if _, _, err := x509svid.Verify(cs.PeerCertificates, s.bundles); err != nil {
		return fmt.Errorf("peer: client certificate refused: %w", err)
	}
	return nil
}

// FromConnectionState returns the peer identity of a connection whose
// tls.Config went through Apply, or (nil, nil) when the client sent no
// certificate. It re-checks the SPIFFE ID (exactly one URI SAN, valid ID).
func FromConnectionState(cs *tls.ConnectionState) (*authn.Peer, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return nil, nil
	}
	return FromCertificate(cs.PeerCertificates[0])
}

// FromCertificate returns the peer identity of a leaf certificate.
func FromCertificate(leaf *x509.Certificate) (*authn.Peer, error) {
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	sum := sha256.Sum256(leaf.Raw)
	p := &authn.Peer{
		SPIFFEID:    id.String(),
		Principal:   strings.TrimPrefix(id.String(), "spiffe://"),
		TrustDomain: id.TrustDomain().Name(),
		CertSHA256:  hex.EncodeToString(sum[:]),
		Subject:     leaf.Subject.String(),
	}
	p.Namespace, p.ServiceAccount = meshParts(id.Path())
	return p, nil
}

// meshParts splits /ns/<ns>/sa/<sa> (Istio's identity form).
func meshParts(path string) (ns, sa string) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(parts) == 4 && parts[0] == "ns" && parts[2] == "sa" {
		return parts[1], parts[3]
	}
	if len(parts) >= 2 && parts[0] == "ns" {
		return parts[1], ""
	}
	return "", ""
}

// ErrPeerRequired is returned by Require for a route in STRICT mode
// reached without a client certificate (on a PERMISSIVE listener).
var ErrPeerRequired = errors.New("peer: client certificate required by the route (STRICT)")

// Require applies a route's peer_authentication override: STRICT needs a
// peer; PERMISSIVE and DISABLE accept any request (the handshake already
// happened, so a route cannot ask for a certificate the listener did not).
func Require(route Mode, p *authn.Peer) error {
	if route == Strict && p == nil {
		return ErrPeerRequired
	}
	return nil
}

// FromConfig builds a listener's settings from its peer_authentication
// section. Trust bundles come from the configured files; a trust domain
// without a file falls back to workload (the Workload API source of
// authn/svid, or nil when identity: is not configured).
func FromConfig(pa configs.PeerAuthentication, workload x509bundle.Source) (*TLSSettings, error) {
	mode, err := ParseMode(pa.Mode)
	if err != nil {
		return nil, err
	}
	if v := reflect.ValueOf(workload); workload != nil && v.Kind() == reflect.Pointer && v.IsNil() {
		workload = nil // a nil *svid.Source when identity: is not configured
	}
	if mode == Disable {
		return ServerTLS(mode, nil)
	}
	var src x509bundle.Source
	switch {
	case len(pa.TrustBundles) > 0:
		set, err := LoadBundles(pa.TrustBundles)
		if err != nil {
			return nil, err
		}
		src = chain{set, workload}
	case workload != nil:
		src = workload
	}
	return ServerTLS(mode, src)
}

// chain asks each source in turn for a trust domain's bundle.
type chain []x509bundle.Source

func (c chain) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	var first error
	for _, s := range c {
		if s == nil {
			continue
		}
		b, err := s.GetX509BundleForTrustDomain(td)
		if err == nil {
			return b, nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = fmt.Errorf("no bundle for trust domain %q", td.Name())
	}
	return nil, first
}

// XFCCHeader is Envoy's client-certificate header.
const XFCCHeader = "X-Forwarded-Client-Cert"

// ForwardClientCert applies forward_client_cert to the request headers
// sent upstream: the client's own XFCC is always removed (an edge trusts
// no client's claim about certificates); with SANITIZE_SET and a verified
// peer, the header is set to the peer's certificate, By naming the
// gateway's own SPIFFE ID (may be empty).
func ForwardClientCert(h http.Header, mode string, p *authn.Peer, by string) {
	h.Del(XFCCHeader)
	if mode == configs.XFCCSanitizeSet && p != nil {
		h.Set(XFCCHeader, p.XFCC(by))
	}
}
