package svid

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/ztgate/ztgate/configs"
)

// originFederation labels bundles fetched from bundle endpoints.
const originFederation = "federation"

// Federation fetch bounds.
const (
	defaultRefresh   = 5 * time.Minute
	maxRefresh       = time.Hour
	minRefresh       = time.Second
	fetchTimeout     = 10 * time.Second
	maxBundleDocSize = 1 << 20
)

// federation fetches one foreign trust domain's bundle.
type federation struct {
	cfg    configs.Federation
	td     spiffeid.TrustDomain
	client *http.Client
}

func newFederation(s *Source, fc configs.Federation) (*federation, error) {
	td, err := spiffeid.TrustDomainFromString(fc.TrustDomain)
	if err != nil {
		return nil, err
	}
	var tlsConf *tls.Config
	switch fc.Profile {
	case configs.ProfileHTTPSSPIFFE:
		id, err := spiffeid.FromString(fc.EndpointSPIFFEID)
		if err != nil {
			return nil, fmt.Errorf("endpoint_spiffe_id: %w", err)
		}
		// Verified with the bundles the gateway holds: the bootstrap
		// trust_bundles entry first, then what this endpoint served.
		tlsConf = tlsconfig.TLSClientConfig(s, tlsconfig.AuthorizeID(id))
	default:
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
		if fc.CAFile != "" {
			pem, err := os.ReadFile(fc.CAFile)
			if err != nil {
				return nil, fmt.Errorf("ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ca_file %s holds no PEM certificate", fc.CAFile)
			}
			tlsConf.RootCAs = pool
		}
	}
	tr := &http.Transport{
		Proxy:                 nil, // never the environment's proxy
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: fetchTimeout,
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       30 * time.Second,
	}
	return &federation{cfg: fc, td: td, client: &http.Client{Transport: tr, Timeout: fetchTimeout}}, nil
}

// fetch GETs the bundle document, bounded in time and size.
func (f *federation) fetch(ctx context.Context) (*spiffebundle.Bundle, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.cfg.BundleEndpointURL, http.NoBody)
	if err != nil {
		return nil, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bundle endpoint answered %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBundleDocSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxBundleDocSize {
		return nil, fmt.Errorf("bundle document larger than %d KiB", maxBundleDocSize>>10)
	}
	b, err := spiffebundle.Parse(f.td, data)
	if err != nil {
		return nil, err
	}
	if len(b.X509Authorities()) == 0 {
		return nil, errors.New("bundle document has no X.509 authorities")
	}
	return b, nil
}

// refresh is the delay until the next fetch after a good one.
func (f *federation) refresh(b *spiffebundle.Bundle) time.Duration {
	if f.cfg.RefreshInterval > 0 {
		return f.cfg.RefreshInterval
	}
	if hint, ok := b.RefreshHint(); ok && hint > 0 {
		return min(max(hint, minRefresh), maxRefresh)
	}
	return defaultRefresh
}

// watchFederation keeps one foreign bundle fresh until the runner stops.
func (r *runner) watchFederation(f *federation) {
	defer r.wg.Done()
	defer f.client.CloseIdleConnections()
	bo := backoffStrategy{r.cfg.Backoff.Initial, r.cfg.Backoff.Max}.NewBackoff()
	for {
		var wait time.Duration
		b, err := f.fetch(r.ctx)
		switch {
		case r.ctx.Err() != nil:
			return
		case err != nil:
			r.s.sourceError(r, "federation_fetch", fmt.Errorf("federation %s (%s): %w; keeping the previous bundle", f.td.Name(), f.cfg.BundleEndpointURL, err))
			wait = bo.Next()
		default:
			bo.Reset()
			r.s.federationUpdate(r, x509bundle.FromX509Authorities(f.td, b.X509Authorities()), f.cfg.BundleEndpointURL)
			wait = f.refresh(b)
		}
		select {
		case <-time.After(wait):
		case <-r.ctx.Done():
			return
		}
	}
}
