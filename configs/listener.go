package configs

import (
	"fmt"
	"strings"
	"time"
)

// Protocol names accepted in listeners[].protocols.
const (
	ProtoH1 = "h1"
	ProtoH2 = "h2"
	ProtoH3 = "h3"
)

// Listener is one ingress socket: TLS over TCP (h1, h2) and optionally
// QUIC (h3) on the same port, or a plain-HTTP listener that only redirects
// to HTTPS and answers ACME HTTP-01 challenges.
type Listener struct {
	Name      string   `mapstructure:"name" json:"name"`
	Address   string   `mapstructure:"address" json:"address"`
	Protocols []string `mapstructure:"protocols" json:"protocols"`

	// TLS is required unless RedirectHTTPS is set.
	TLS *ListenerTLS `mapstructure:"tls" json:"tls,omitempty"`
	// RedirectHTTPS makes this a plain-HTTP listener that answers every
	// request with a redirect to HTTPS (and serves ACME HTTP-01).
	RedirectHTTPS *Redirect `mapstructure:"redirect_https" json:"redirect_https,omitempty"`

	// TrustedProxies are the CIDRs whose X-Forwarded-For and
	// X-Forwarded-Proto are believed. Others' are replaced.
	TrustedProxies []string `mapstructure:"trusted_proxies" json:"trusted_proxies,omitempty"`

	// PeerAuthentication: client certificates (STRICT, PERMISSIVE, DISABLE).
	PeerAuthentication PeerAuthentication `mapstructure:"peer_authentication" json:"peer_authentication"`

	// Policies are authz policy names attached to every route served here.
	Policies []string `mapstructure:"policies" json:"policies,omitempty"`

	Limits Limits `mapstructure:"limits" json:"limits"`
}

// Redirect configures a plain-HTTP redirecting listener.
type Redirect struct {
	// Port is the HTTPS port in the Location header; 443 is omitted.
	Port int `mapstructure:"port" json:"port"`
}

// ListenerTLS says where the listener's certificates come from. Exactly
// one source: local_ca (default when none is set), acme or files.
type ListenerTLS struct {
	// Names are the server names to obtain or issue certificates for.
	// With files, they are read from the certificates instead.
	Names   []string   `mapstructure:"names" json:"names,omitempty"`
	ACME    *ACME      `mapstructure:"acme" json:"acme,omitempty"`
	Files   []CertFile `mapstructure:"files" json:"files,omitempty"`
	LocalCA *bool      `mapstructure:"local_ca" json:"local_ca,omitempty"`

	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `mapstructure:"min_version" json:"min_version"`
	// OCSPStapling staples OCSP responses when the CA offers them (default true).
	OCSPStapling *bool `mapstructure:"ocsp_stapling" json:"ocsp_stapling,omitempty"`
}

// CertFile is a certificate chain and its private key, both PEM. Key may
// instead be an RFC 7512 "pkcs11:" URI naming a key inside an HSM.
type CertFile struct {
	Cert string `mapstructure:"cert" json:"cert"`
	Key  string `mapstructure:"key" json:"key"`
}

// ACME obtains certificates from an ACME CA (Let's Encrypt, pebble, step-ca).
type ACME struct {
	Email string `mapstructure:"email" json:"email"`
	// Directory is the CA's directory URL.
	Directory string `mapstructure:"directory" json:"directory"`
	// CARoot is a PEM file of roots to trust when talking to the CA
	// (for a private CA such as pebble); empty uses the system roots.
	CARoot string `mapstructure:"ca_root" json:"ca_root,omitempty"`
	// Challenges enabled: http-01, tls-alpn-01 (default both).
	Challenges []string `mapstructure:"challenges" json:"challenges,omitempty"`
	// HTTPPort and TLSALPNPort are where the CA connects to solve
	// challenges (defaults 80 and 443; change them only for tests).
	HTTPPort    int `mapstructure:"http_port" json:"http_port,omitempty"`
	TLSALPNPort int `mapstructure:"tls_alpn_port" json:"tls_alpn_port,omitempty"`
}

// Source names the certificate source of a listener.
func (t *ListenerTLS) Source() string {
	switch {
	case t.ACME != nil:
		return "acme"
	case len(t.Files) > 0:
		return "files"
	default:
		return "local_ca"
	}
}

// Limits bound what one client can make a listener hold.
type Limits struct {
	MaxConnections       int           `mapstructure:"max_connections" json:"max_connections"`
	MaxHeaderBytes       int           `mapstructure:"max_header_bytes" json:"max_header_bytes"`
	ReadHeaderTimeout    time.Duration `mapstructure:"read_header_timeout" json:"read_header_timeout"`
	ReadTimeout          time.Duration `mapstructure:"read_timeout" json:"read_timeout"`
	WriteTimeout         time.Duration `mapstructure:"write_timeout" json:"write_timeout"`
	IdleTimeout          time.Duration `mapstructure:"idle_timeout" json:"idle_timeout"`
	HandshakeTimeout     time.Duration `mapstructure:"handshake_timeout" json:"handshake_timeout"`
	MaxConcurrentStreams int           `mapstructure:"max_concurrent_streams" json:"max_concurrent_streams"`
}

func (l *Listener) setDefaults() {
	if len(l.Protocols) == 0 && l.RedirectHTTPS == nil {
		l.Protocols = []string{ProtoH1, ProtoH2}
	}
	if l.TLS != nil && l.TLS.MinVersion == "" {
		l.TLS.MinVersion = "1.2"
	}
	if l.TLS != nil && l.TLS.ACME != nil {
		a := l.TLS.ACME
		if len(a.Challenges) == 0 {
			a.Challenges = []string{"http-01", "tls-alpn-01"}
		}
		if a.HTTPPort == 0 {
			a.HTTPPort = 80
		}
		if a.TLSALPNPort == 0 {
			a.TLSALPNPort = 443
		}
	}
	if l.RedirectHTTPS != nil && l.RedirectHTTPS.Port == 0 {
		l.RedirectHTTPS.Port = 443
	}
	d := &l.Limits
	if d.MaxConnections == 0 {
		d.MaxConnections = 10000
	}
	if d.MaxHeaderBytes == 0 {
		d.MaxHeaderBytes = 64 << 10
	}
	if d.ReadHeaderTimeout == 0 {
		d.ReadHeaderTimeout = 10 * time.Second
	}
	if d.IdleTimeout == 0 {
		d.IdleTimeout = 120 * time.Second
	}
	if d.HandshakeTimeout == 0 {
		d.HandshakeTimeout = 10 * time.Second
	}
	if d.MaxConcurrentStreams == 0 {
		d.MaxConcurrentStreams = 250
	}
	l.PeerAuthentication.setDefaults()
}

func (c *Config) validateListeners(v *validator) {
	names := make([]string, len(c.Listeners))
	addrs := map[string]int{}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		names[i] = l.Name
		lv := v.index("listeners", i)
		if l.Name == "" {
			lv.addf("name", "is required (a short name used by routes and metrics, e.g. \"public\")")
		}
		if l.Address == "" {
			lv.addf("address", "is required (e.g. \":8443\")")
		} else if lv.hostPort("address", l.Address) {
			if j, dup := addrs[l.Address]; dup && !strings.HasSuffix(l.Address, ":0") {
				lv.addf("address", "%q is already used by listeners[%d]", l.Address, j)
			}
			addrs[l.Address] = i
		}
		l.validate(lv, c)
	}
	v.unique("listeners", "listener", names)
}

func (l *Listener) validate(v *validator, c *Config) {
	switch {
	case l.TLS == nil && l.RedirectHTTPS == nil:
		v.addf("tls", "is required: ztgate serves HTTPS only (add tls: {names: [...]}, or redirect_https: {} for a plain-HTTP redirect listener)")
	case l.TLS != nil && l.RedirectHTTPS != nil:
		v.addf("redirect_https", "cannot be combined with tls (a redirect listener is plain HTTP)")
	}
	if l.RedirectHTTPS != nil {
		if len(l.Protocols) > 0 {
			v.addf("protocols", "is not used on a redirect_https listener (remove it)")
		}
		if l.RedirectHTTPS.Port < 1 || l.RedirectHTTPS.Port > 65535 {
			v.addf("redirect_https.port", "%d is not a port (1-65535)", l.RedirectHTTPS.Port)
		}
	}
	for j, p := range l.Protocols {
		v.oneOf(fmt.Sprintf("protocols[%d]", j), p, ProtoH1, ProtoH2, ProtoH3)
	}
	if l.TLS != nil {
		l.TLS.validate(v.at("tls"), c)
	}
	for j, p := range l.TrustedProxies {
		v.prefix(fmt.Sprintf("trusted_proxies[%d]", j), p)
	}
	if len(l.Policies) > 0 {
		refs := c.Authz.policyRefs()
		for j, p := range l.Policies {
			refs.check(v.at(fmt.Sprintf("policies[%d]", j)), p)
		}
	}
	d := l.Limits
	if d.MaxConnections < 0 {
		v.addf("limits.max_connections", "%d must be positive", d.MaxConnections)
	}
	if d.MaxHeaderBytes < 1024 || d.MaxHeaderBytes > 16<<20 {
		v.addf("limits.max_header_bytes", "%d is out of range (1024 to 16777216)", d.MaxHeaderBytes)
	}
	for key, dur := range map[string]time.Duration{
		"read_header_timeout": d.ReadHeaderTimeout, "read_timeout": d.ReadTimeout,
		"write_timeout": d.WriteTimeout, "idle_timeout": d.IdleTimeout, "handshake_timeout": d.HandshakeTimeout,
	} {
		if dur < 0 {
			v.addf("limits."+key, "%s must not be negative", dur)
		}
	}
	l.PeerAuthentication.validate(v.at("peer_authentication"), c)
}

func (t *ListenerTLS) validate(v *validator, c *Config) {
	sources := 0
	if t.ACME != nil {
		sources++
	}
	if len(t.Files) > 0 {
		sources++
	}
	if t.LocalCA != nil && *t.LocalCA {
		sources++
	}
	if sources > 1 {
		v.addf("", "sets more than one certificate source (use exactly one of acme, files, local_ca)")
	}
	v.oneOf("min_version", t.MinVersion, "1.2", "1.3")
	if t.Source() != "files" && len(t.Names) == 0 {
		v.addf("names", "is required for %s certificates (the server names, e.g. [api.example.com])", t.Source())
	}
	for i, n := range t.Names {
		if err := checkServerName(n); err != nil {
			v.addf(fmt.Sprintf("names[%d]", i), "%q %v", n, err)
		}
	}
	for i, f := range t.Files {
		fv := v.index("files", i)
		fv.file("cert", f.Cert)
		if !strings.HasPrefix(f.Key, "pkcs11:") { // an HSM key (RFC 7512 URI) is no file
			fv.file("key", f.Key)
		}
	}
	if a := t.ACME; a != nil {
		av := v.at("acme")
		if a.Directory == "" {
			av.addf("directory", "is required (the CA's directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory)")
		} else if !strings.HasPrefix(a.Directory, "https://") {
			av.addf("directory", "%q must be an https:// URL", a.Directory)
		}
		if a.CARoot != "" {
			av.file("ca_root", a.CARoot)
		}
		for i, ch := range a.Challenges {
			av.oneOf(fmt.Sprintf("challenges[%d]", i), ch, "http-01", "tls-alpn-01")
		}
		if a.HTTPPort < 1 || a.HTTPPort > 65535 {
			av.addf("http_port", "%d is not a port", a.HTTPPort)
		}
		if a.TLSALPNPort < 1 || a.TLSALPNPort > 65535 {
			av.addf("tls_alpn_port", "%d is not a port", a.TLSALPNPort)
		}
	}
}

// checkServerName accepts DNS names, "*." wildcards, and IP literals.
func checkServerName(n string) error {
	if n == "" {
		return fmt.Errorf("is empty")
	}
	if len(n) > 253 {
		return fmt.Errorf("is longer than 253 characters")
	}
	name := strings.TrimPrefix(n, "*.")
	if _, err := ParsePrefix(name); err == nil && !strings.Contains(name, "/") {
		return nil
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("is not a valid DNS name (empty or over-long label)")
		}
		for _, r := range label {
			if !(r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return fmt.Errorf("is not a valid DNS name (character %q; use punycode for IDNs)", r)
			}
		}
	}
	return nil
}
