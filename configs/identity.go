package configs

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Identity configures the gateway's own SPIFFE identity: the X.509-SVID it
// presents to SPIFFE upstreams, and the trust bundles that verify SPIFFE
// peers (upstreams, and ingress clients when peer_authentication uses the
// identity bundles).
//
// One SVID source: workload_api (a SPIRE agent, streamed updates) or files
// (PEM files written by spiffe-helper or another agent, watched). Static
// trust_bundles add verification-only bundles for further trust domains.
// A reload (SIGHUP) keeps the running source when this section is unchanged.
type Identity struct {
	// WorkloadAPI is the SPIFFE Workload API endpoint, e.g.
	// unix:///run/spire/agent.sock (or tcp://127.0.0.1:8081). SVID and
	// bundle updates, including federated bundles, are streamed.
	WorkloadAPI string `mapstructure:"workload_api" json:"workload_api,omitempty"`
	// SPIFFEID selects the SVID when the Workload API issues several to
	// the gateway (default: the first, as SPIRE orders them). With files,
	// a certificate with another ID is rejected.
	SPIFFEID string `mapstructure:"spiffe_id" json:"spiffe_id,omitempty"`
	// Files reads the SVID from PEM files instead of the Workload API.
	Files *IdentityFiles `mapstructure:"files" json:"files,omitempty"`
	// TrustBundles are static, verification-only CA bundles per trust
	// domain (PEM, or a SPIFFE bundle JSON document), e.g. for federated
	// trust domains when the SVID comes from files. They are merged with
	// the source's bundles, and re-read when the file changes.
	TrustBundles []TrustBundle `mapstructure:"trust_bundles" json:"trust_bundles,omitempty"`
	// Federation fetches the bundles of other trust domains from their
	// SPIFFE bundle endpoints and keeps them fresh (SPIFFE Federation).
	// With the Workload API, SPIRE usually does this and sends federated
	// bundles itself; this is for files or for domains SPIRE does not
	// federate with.
	Federation []Federation `mapstructure:"federation" json:"federation,omitempty"`
	// WatchInterval is how often files and trust_bundles are checked for
	// changes (default 1s).
	WatchInterval time.Duration `mapstructure:"watch_interval" json:"watch_interval"`
	// Backoff paces reconnects to the Workload API after it fails.
	Backoff IdentityBackoff `mapstructure:"backoff" json:"backoff"`
}

// IdentityFiles names the PEM files holding the gateway's X.509-SVID.
// The files may appear after startup; until a valid set is read the
// gateway is not ready. A set that does not parse, whose key does not match
// the certificate, or that does not chain to the bundle (a file caught
// half-written) is ignored and retried; the previous SVID stays in use.
type IdentityFiles struct {
	// Cert is the SVID certificate chain, leaf first.
	Cert string `mapstructure:"cert" json:"cert"`
	// Key is the SVID private key (PKCS#8, EC or RSA PEM).
	Key string `mapstructure:"key" json:"key"`
	// Bundle is the CA bundle of the SVID's trust domain (PEM).
	Bundle string `mapstructure:"bundle" json:"bundle"`
}

// Bundle endpoint profiles (SPIFFE Federation).
const (
	ProfileHTTPSWeb    = "https_web"
	ProfileHTTPSSPIFFE = "https_spiffe"
)

// Federation is one foreign trust domain whose bundle is fetched from its
// bundle endpoint.
type Federation struct {
	// TrustDomain is the foreign trust domain, e.g. partner.example.
	TrustDomain string `mapstructure:"trust_domain" json:"trust_domain"`
	// BundleEndpointURL is its bundle endpoint (https://...).
	BundleEndpointURL string `mapstructure:"bundle_endpoint_url" json:"bundle_endpoint_url"`
	// Profile is https_web (default: the endpoint has a Web PKI
	// certificate) or https_spiffe (the endpoint presents an SVID,
	// endpoint_spiffe_id, verified with the bundle it serves; bootstrap
	// it with a trust_bundles entry for the same trust domain).
	Profile string `mapstructure:"profile" json:"profile"`
	// EndpointSPIFFEID is the endpoint's SPIFFE ID (https_spiffe only).
	EndpointSPIFFEID string `mapstructure:"endpoint_spiffe_id" json:"endpoint_spiffe_id,omitempty"`
	// CAFile verifies an https_web endpoint (default: the system roots).
	CAFile string `mapstructure:"ca_file" json:"ca_file,omitempty"`
	// RefreshInterval overrides the bundle's refresh_hint (default: the
	// hint, else 5m; at least 1s).
	RefreshInterval time.Duration `mapstructure:"refresh_interval" json:"refresh_interval,omitempty"`
}

// IdentityBackoff is an exponential backoff.
type IdentityBackoff struct {
	// Initial is the first retry delay (default 500ms).
	Initial time.Duration `mapstructure:"initial" json:"initial"`
	// Max caps the delay (default 30s).
	Max time.Duration `mapstructure:"max" json:"max"`
}

// Enabled reports whether any identity source is configured: an SVID
// source or static trust bundles.
func (i *Identity) Enabled() bool {
	return i.HasSVIDSource() || len(i.TrustBundles) > 0 || len(i.Federation) > 0
}

// HasSVIDSource reports whether the gateway has an SVID of its own
// (workload_api or files), which SPIFFE upstreams need.
func (i *Identity) HasSVIDSource() bool { return i.WorkloadAPI != "" || i.Files != nil }

func (i *Identity) setDefaults() {
	for n := range i.Federation {
		if i.Federation[n].Profile == "" {
			i.Federation[n].Profile = ProfileHTTPSWeb
		}
	}
	if i.WatchInterval == 0 {
		i.WatchInterval = time.Second
	}
	if i.Backoff.Initial == 0 {
		i.Backoff.Initial = 500 * time.Millisecond
	}
	if i.Backoff.Max == 0 {
		i.Backoff.Max = 30 * time.Second
	}
}

func (i *Identity) validate(v *validator, c *Config) {
	if i.WorkloadAPI != "" && i.Files != nil {
		v.addf("", "set either workload_api or files, not both")
	}
	if i.WorkloadAPI != "" {
		if err := checkWorkloadAPIAddr(i.WorkloadAPI); err != nil {
			v.addf("workload_api", "%q %v", i.WorkloadAPI, err)
		}
	}
	if i.SPIFFEID != "" {
		if err := CheckSPIFFEID(i.SPIFFEID); err != nil {
			v.addf("spiffe_id", "%q %v", i.SPIFFEID, err)
		}
		if !i.HasSVIDSource() {
			v.addf("spiffe_id", "needs workload_api or files")
		}
	}
	if f := i.Files; f != nil {
		fv := v.at("files")
		// The files need not exist yet: an agent may write them after
		// the gateway starts. They are watched.
		for _, kv := range [][2]string{{"cert", f.Cert}, {"key", f.Key}, {"bundle", f.Bundle}} {
			if kv[1] == "" {
				fv.addf(kv[0], "must name a PEM file (files needs cert, key and bundle)")
			}
		}
	}
	tds := make([]string, len(i.TrustBundles))
	for n, b := range i.TrustBundles {
		bv := v.index("trust_bundles", n)
		if _, err := spiffeid.TrustDomainFromString(b.TrustDomain); err != nil {
			bv.addf("trust_domain", "%q is not a SPIFFE trust domain (e.g. example.org): %v", b.TrustDomain, err)
		}
		tds[n] = b.TrustDomain
		bv.file("file", b.File)
	}
	seen := map[string]int{}
	for n, td := range tds {
		if j, dup := seen[td]; dup && td != "" {
			v.addf(fmt.Sprintf("trust_bundles[%d].trust_domain", n), "%q is already listed at trust_bundles[%d] (put all its CAs in one file)", td, j)
			continue
		}
		seen[td] = n
	}
	fedTDs := map[string]int{}
	for n, fd := range i.Federation {
		fv := v.index("federation", n)
		if _, err := spiffeid.TrustDomainFromString(fd.TrustDomain); err != nil {
			fv.addf("trust_domain", "%q is not a SPIFFE trust domain (e.g. partner.example): %v", fd.TrustDomain, err)
		} else if j, dup := fedTDs[fd.TrustDomain]; dup {
			fv.addf("trust_domain", "%q is already listed at federation[%d]", fd.TrustDomain, j)
		}
		fedTDs[fd.TrustDomain] = n
		if u, err := url.Parse(fd.BundleEndpointURL); err != nil || u.Scheme != "https" || u.Host == "" {
			fv.addf("bundle_endpoint_url", "%q must be an https:// URL (e.g. https://spire.partner.example:8443)", fd.BundleEndpointURL)
		}
		if fv.oneOf("profile", fd.Profile, ProfileHTTPSWeb, ProfileHTTPSSPIFFE) {
			switch fd.Profile {
			case ProfileHTTPSSPIFFE:
				if err := CheckSPIFFEID(fd.EndpointSPIFFEID); err != nil {
					fv.addf("endpoint_spiffe_id", "%q %v (https_spiffe needs the endpoint's ID)", fd.EndpointSPIFFEID, err)
				}
				if fd.CAFile != "" {
					fv.addf("ca_file", "is for https_web; https_spiffe endpoints are verified with the trust domain's bundle")
				}
			case ProfileHTTPSWeb:
				if fd.EndpointSPIFFEID != "" {
					fv.addf("endpoint_spiffe_id", "is for https_spiffe; https_web endpoints are verified by ca_file or the system roots")
				}
				if fd.CAFile != "" {
					fv.file("ca_file", fd.CAFile)
				}
			}
		}
		if fd.RefreshInterval != 0 && fd.RefreshInterval < time.Second {
			fv.addf("refresh_interval", "%s is too short (at least 1s, or 0 for the bundle's refresh hint)", fd.RefreshInterval)
		}
	}
	if i.WatchInterval < 10*time.Millisecond {
		v.addf("watch_interval", "%s is too short (at least 10ms)", i.WatchInterval)
	}
	if i.Backoff.Initial <= 0 || i.Backoff.Max < i.Backoff.Initial {
		v.addf("backoff", "initial (%s) must be positive and max (%s) at least initial", i.Backoff.Initial, i.Backoff.Max)
	}
	if !i.HasSVIDSource() {
		for n := range c.Upstreams {
			if c.Upstreams[n].TLS.SPIFFE() {
				v.addf("", "upstream %q verifies by SPIFFE ID and presents the gateway's SVID: set identity.workload_api (e.g. unix:///run/spire/agent.sock) or identity.files", c.Upstreams[n].Name)
				break
			}
		}
	}
}

// checkWorkloadAPIAddr accepts what go-spiffe's Workload API client dials:
// unix:///absolute/path or tcp://IP:port.
func checkWorkloadAPIAddr(addr string) error {
	const hint = "(use unix:///run/spire/agent.sock or tcp://127.0.0.1:8081)"
	u, err := url.Parse(addr)
	if err != nil {
		return fmt.Errorf("is not a URL %s", hint)
	}
	switch u.Scheme {
	case "unix":
		if u.Opaque != "" || u.Host != "" || u.Path == "" || !filepath.IsAbs(u.Path) {
			return fmt.Errorf("must be unix:// followed by an absolute socket path %s", hint)
		}
		if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("must not have a query, fragment or user %s", hint)
		}
	case "tcp":
		host, _, err := net.SplitHostPort(u.Host)
		if err != nil || net.ParseIP(host) == nil || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("must be tcp://IP:port (an IP address, not a name) %s", hint)
		}
	default:
		return fmt.Errorf("has scheme %q; use unix or tcp %s", u.Scheme, hint)
	}
	return nil
}
