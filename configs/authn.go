package configs

import (
	"encoding/json"
	"fmt"
	"net/url"
	"time"

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
	// ForwardClientCert is what upstreams receive in
	// X-Forwarded-Client-Cert, as Envoy's forward_client_cert_details:
	// SANITIZE (default: the client's header is removed, none is sent) or
	// SANITIZE_SET (removed, then set to the verified peer's certificate).
	ForwardClientCert string `mapstructure:"forward_client_cert" json:"forward_client_cert,omitempty"`
}

// X-Forwarded-Client-Cert handling (listeners[].peer_authentication.forward_client_cert).
const (
	XFCCSanitize    = "SANITIZE"
	XFCCSanitizeSet = "SANITIZE_SET"
)

// TrustBundle is a PEM file of CA certificates for one trust domain.
type TrustBundle struct {
	TrustDomain string `mapstructure:"trust_domain" json:"trust_domain"`
	File        string `mapstructure:"file" json:"file"`
}

func (p *PeerAuthentication) setDefaults() {
	if p.Mode == "" {
		p.Mode = PeerDisable
	}
	if p.ForwardClientCert == "" {
		p.ForwardClientCert = XFCCSanitize
	}
}

func (p *PeerAuthentication) validate(v *validator, c *Config) {
	v.oneOf("mode", p.Mode, PeerStrict, PeerPermissive, PeerDisable)
	v.oneOf("forward_client_cert", p.ForwardClientCert, XFCCSanitize, XFCCSanitizeSet)
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

// Authn configures request authentication (JWT), as Istio's
// RequestAuthentication.
type Authn struct {
	// JWT lists the token issuers the gateway accepts.
	JWT []JWTProvider `mapstructure:"jwt" json:"jwt,omitempty"`
	// TokenCacheSize bounds the verified-token cache (entries; default
	// 10000; -1 disables it).
	TokenCacheSize int `mapstructure:"token_cache_size" json:"token_cache_size"`
}

// JWTProvider is one token issuer: where its keys come from, where the
// token is found and what reaches the upstream.
type JWTProvider struct {
	// Name identifies the provider in logs and metrics (default: the issuer).
	Name string `mapstructure:"name" json:"name"`
	// Issuer must equal the token's iss claim.
	Issuer string `mapstructure:"issuer" json:"issuer"`
	// Audiences: the token's aud must contain one of them. Empty accepts any.
	Audiences []string `mapstructure:"audiences" json:"audiences,omitempty"`

	// Exactly one of JWKSURI, JWKS (inline JSON) and JWKSFile.
	JWKSURI  string `mapstructure:"jwks_uri" json:"jwks_uri,omitempty"`
	JWKS     string `mapstructure:"jwks" json:"jwks,omitempty"`
	JWKSFile string `mapstructure:"jwks_file" json:"jwks_file,omitempty"`
	// JWKSCA is a PEM file of CA certificates to verify jwks_uri (default:
	// the system roots).
	JWKSCA string `mapstructure:"jwks_ca" json:"jwks_ca,omitempty"`
	// JWKSRefresh is the background refresh interval (default 10m); a
	// shorter Cache-Control max-age from the IdP wins, down to 30s.
	JWKSRefresh time.Duration `mapstructure:"jwks_refresh" json:"jwks_refresh,omitempty"`
	// JWKSRefetchMinInterval rate-limits refetches triggered by an unknown
	// kid (default 30s), so forged kids cannot make the gateway hammer the IdP.
	JWKSRefetchMinInterval time.Duration `mapstructure:"jwks_refetch_min_interval" json:"jwks_refetch_min_interval,omitempty"`

	// Algorithms allowed for this issuer (default: RS256, RS384, RS512,
	// PS256, PS384, PS512, ES256, ES384, ES512, EdDSA). HMAC and none are
	// never accepted.
	Algorithms []string `mapstructure:"algorithms" json:"algorithms,omitempty"`
	// ClockSkew tolerated on exp, nbf and iat (default 60s).
	ClockSkew time.Duration `mapstructure:"clock_skew" json:"clock_skew,omitempty"`
	// MaxTokenBytes bounds the token size (default 8192).
	MaxTokenBytes int `mapstructure:"max_token_bytes" json:"max_token_bytes,omitempty"`

	// Where the token is found. With none set: the Authorization header
	// with the "Bearer " prefix, then the access_token query parameter.
	FromHeaders []JWTHeader `mapstructure:"from_headers" json:"from_headers,omitempty"`
	FromParams  []string    `mapstructure:"from_params" json:"from_params,omitempty"`
	FromCookies []string    `mapstructure:"from_cookies" json:"from_cookies,omitempty"`

	// ForwardOriginalToken keeps the token in the request sent upstream
	// (default false: it is removed).
	ForwardOriginalToken bool `mapstructure:"forward_original_token" json:"forward_original_token,omitempty"`
	// OutputClaimToHeaders copies claims of a verified token into request
	// headers. Those headers are always removed from the client's request.
	OutputClaimToHeaders []ClaimToHeader `mapstructure:"output_claim_to_headers" json:"output_claim_to_headers,omitempty"`

	// Routes limits the provider to these routes (default: all routes).
	Routes []string `mapstructure:"routes" json:"routes,omitempty"`
}

// JWTHeader is a request header carrying a token after an optional prefix.
type JWTHeader struct {
	Name   string `mapstructure:"name" json:"name"`
	Prefix string `mapstructure:"prefix" json:"prefix,omitempty"`
}

// ClaimToHeader copies one claim (dotted path for nested claims) into a
// request header.
type ClaimToHeader struct {
	Header string `mapstructure:"header" json:"header"`
	Claim  string `mapstructure:"claim" json:"claim"`
}

// JWT algorithms accepted in authn.jwt[].algorithms.
var JWTAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Defaults for authn.
const (
	DefaultTokenCacheSize         = 10000
	DefaultJWKSRefresh            = 10 * time.Minute
	DefaultJWKSRefetchMinInterval = 30 * time.Second
	DefaultJWTClockSkew           = 60 * time.Second
	DefaultMaxTokenBytes          = 8192
)

func (a *Authn) setDefaults() {
	if a.TokenCacheSize == 0 {
		a.TokenCacheSize = DefaultTokenCacheSize
	}
	for i := range a.JWT {
		p := &a.JWT[i]
		if p.Name == "" {
			p.Name = p.Issuer
		}
		if len(p.Algorithms) == 0 {
			p.Algorithms = append([]string(nil), JWTAlgorithms...)
		}
		if p.ClockSkew == 0 {
			p.ClockSkew = DefaultJWTClockSkew
		}
		if p.MaxTokenBytes == 0 {
			p.MaxTokenBytes = DefaultMaxTokenBytes
		}
		if p.JWKSURI != "" {
			if p.JWKSRefresh == 0 {
				p.JWKSRefresh = DefaultJWKSRefresh
			}
			if p.JWKSRefetchMinInterval == 0 {
				p.JWKSRefetchMinInterval = DefaultJWKSRefetchMinInterval
			}
		}
		if len(p.FromHeaders) == 0 && len(p.FromParams) == 0 && len(p.FromCookies) == 0 {
			p.FromHeaders = []JWTHeader{{Name: "Authorization", Prefix: "Bearer "}}
			p.FromParams = []string{"access_token"}
		}
	}
}

func (a *Authn) validate(v *validator, c *Config) {
	if a.TokenCacheSize < -1 {
		v.addf("token_cache_size", "%d is not valid (a number of entries, or -1 to disable the cache)", a.TokenCacheSize)
	}
	routes := make([]string, len(c.Routes))
	for i, r := range c.Routes {
		routes[i] = r.Name
	}
	names := make([]string, len(a.JWT))
	for i := range a.JWT {
		p := &a.JWT[i]
		names[i] = p.Name
		pv := v.index("jwt", i)
		if p.Issuer == "" {
			pv.addf("issuer", "is required (the token's iss claim, e.g. \"testing@secure.istio.io\")")
		}
		sources := 0
		for _, s := range []string{p.JWKSURI, p.JWKS, p.JWKSFile} {
			if s != "" {
				sources++
			}
		}
		if sources != 1 {
			pv.addf("", "needs exactly one of jwks_uri, jwks, jwks_file (found %d)", sources)
		}
		if p.JWKSURI != "" {
			u, err := url.Parse(p.JWKSURI)
			if err != nil || u.Scheme != "https" || u.Host == "" {
				pv.addf("jwks_uri", "%q is not an https:// URL (keys must come over TLS)", p.JWKSURI)
			}
			if p.JWKSRefresh < time.Second {
				pv.addf("jwks_refresh", "%s is too short (at least 1s; default 10m)", p.JWKSRefresh)
			}
			if p.JWKSRefetchMinInterval < 0 {
				pv.addf("jwks_refetch_min_interval", "%s must not be negative", p.JWKSRefetchMinInterval)
			}
		} else {
			if p.JWKSCA != "" {
				pv.addf("jwks_ca", "is only used with jwks_uri (remove it)")
			}
		}
		if p.JWKS != "" && !json.Valid([]byte(p.JWKS)) {
			pv.addf("jwks", "is not valid JSON (paste the JWKS document, {\"keys\": [...]})")
		}
		if p.JWKSFile != "" {
			pv.file("jwks_file", p.JWKSFile)
		}
		if p.JWKSCA != "" {
			pv.file("jwks_ca", p.JWKSCA)
		}
		for j, alg := range p.Algorithms {
			pv.oneOf(fmt.Sprintf("algorithms[%d]", j), alg, JWTAlgorithms...)
		}
		if p.ClockSkew < 0 || p.ClockSkew > time.Hour {
			pv.addf("clock_skew", "%s is out of range (0 to 1h; default 60s)", p.ClockSkew)
		}
		if p.MaxTokenBytes < 256 || p.MaxTokenBytes > 1<<20 {
			pv.addf("max_token_bytes", "%d is out of range (256 to 1048576; default 8192)", p.MaxTokenBytes)
		}
		for j, h := range p.FromHeaders {
			if !validHeaderName(h.Name) {
				pv.addf(fmt.Sprintf("from_headers[%d].name", j), "%q is not a header name", h.Name)
			}
		}
		for j, q := range p.FromParams {
			if q == "" {
				pv.addf(fmt.Sprintf("from_params[%d]", j), "must name a query parameter")
			}
		}
		for j, ck := range p.FromCookies {
			if !validHeaderName(ck) {
				pv.addf(fmt.Sprintf("from_cookies[%d]", j), "%q is not a cookie name", ck)
			}
		}
		for j, o := range p.OutputClaimToHeaders {
			if !validHeaderName(o.Header) {
				pv.addf(fmt.Sprintf("output_claim_to_headers[%d].header", j), "%q is not a header name", o.Header)
			}
			if o.Claim == "" {
				pv.addf(fmt.Sprintf("output_claim_to_headers[%d].claim", j), "must name a claim (e.g. sub, or a dotted path such as realm.role)")
			}
		}
		for j, r := range p.Routes {
			pv.reference(fmt.Sprintf("routes[%d]", j), "route", r, routes)
		}
	}
	v.unique("jwt", "JWT provider", names)
}

// CheckSPIFFEID validates a SPIFFE ID such as spiffe://example.org/ns/default/sa/web.
func CheckSPIFFEID(id string) error {
	if _, err := spiffeid.FromString(id); err != nil {
		return fmt.Errorf("is not a SPIFFE ID (e.g. spiffe://example.org/ns/default/sa/web): %v", err)
	}
	return nil
}
