package configs

import (
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Peer authentication modes, as Istio's PeerAuthentication.
const (
	PeerStrict     = "STRICT"
	PeerPermissive = "PERMISSIVE"
	PeerDisable    = "DISABLE"
)

// PeerAuthentication configures client certificates on a listener.
type PeerAuthentication struct {
	// Mode is STRICT (a valid client certificate is required at the
	// handshake), PERMISSIVE (optional) or DISABLE (default; none asked).
	Mode string `mapstructure:"mode" json:"mode"`
	// TrustBundles verify client certificates, per SPIFFE trust domain.
	TrustBundles []TrustBundle `mapstructure:"trust_bundles" json:"trust_bundles,omitempty"`
}

// TrustBundle is a PEM file of CA certificates for one trust domain.
type TrustBundle struct {
	TrustDomain string `mapstructure:"trust_domain" json:"trust_domain"`
	File        string `mapstructure:"file" json:"file"`
}

func (p *PeerAuthentication) setDefaults() {
	if p.Mode == "" {
		p.Mode = PeerDisable
	}
}

func (p *PeerAuthentication) validate(v *validator, c *Config) {
	v.oneOf("mode", p.Mode, PeerStrict, PeerPermissive, PeerDisable)
	for i, b := range p.TrustBundles {
		bv := v.index("trust_bundles", i)
		if _, err := spiffeid.TrustDomainFromString(b.TrustDomain); err != nil {
			bv.addf("trust_domain", "%q is not a SPIFFE trust domain (e.g. example.org): %v", b.TrustDomain, err)
		}
		bv.file("file", b.File)
	}
	if p.Mode != PeerDisable && len(p.TrustBundles) == 0 && !c.Identity.Enabled() {
		v.addf("trust_bundles", "is required for mode %s (or configure identity: to use the Workload API bundles)", p.Mode)
	}
}

// Authn configures request authentication (JWT).
type Authn struct{}

func (a *Authn) setDefaults() {}

func (a *Authn) validate(v *validator, c *Config) {}

// CheckSPIFFEID validates a SPIFFE ID such as spiffe://example.org/ns/default/sa/web.
func CheckSPIFFEID(id string) error {
	if _, err := spiffeid.FromString(id); err != nil {
		return fmt.Errorf("is not a SPIFFE ID (e.g. spiffe://example.org/ns/default/sa/web): %v", err)
	}
	return nil
}
