package svid

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ztgate/ztgate/configs"
)

// parseSVIDFiles validates an SVID file set as a whole: the chain and key
// parse and match, the bundle parses, the chain verifies against the
// bundle now, and the ID is the wanted one. Anything short of that is
// what a reader sees while an agent is rewriting the files.
func parseSVIDFiles(certPEM, keyPEM, bundlePEM []byte, wantID string, now time.Time) (*x509svid.SVID, *x509bundle.Bundle, error) {
	sv, err := x509svid.Parse(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("cert/key: %w", err)
	}
	if wantID != "" && sv.ID.String() != wantID {
		return nil, nil, fmt.Errorf("the certificate is for %s but identity.spiffe_id is %s", sv.ID, wantID)
	}
	b, err := x509bundle.Parse(sv.ID.TrustDomain(), bundlePEM)
	if err != nil {
		return nil, nil, fmt.Errorf("bundle: %w", err)
	}
	if b.Empty() {
		return nil, nil, errors.New("bundle: no CA certificates")
	}
	if _, _, err := x509svid.Verify(sv.Certificates, b, x509svid.WithTime(now)); err != nil {
		return nil, nil, fmt.Errorf("the certificate does not verify against the bundle: %w", err)
	}
	return sv, b, nil
}

// loadStaticBundles reads identity.trust_bundles at (re)load: an error
// here is a config error.
func loadStaticBundles(list []configs.TrustBundle, now time.Time) (map[spiffeid.TrustDomain]bundleEntry, error) {
	out := map[spiffeid.TrustDomain]bundleEntry{}
	for i, tb := range list {
		data, err := readLimited(tb.File)
		if err != nil {
			return nil, fmt.Errorf("trust_bundles[%d]: %w", i, err)
		}
		e, err := parseStaticBundle(tb, data, now)
		if err != nil {
			return nil, fmt.Errorf("trust_bundles[%d]: %s: %w", i, tb.File, err)
		}
		out[e.b.TrustDomain()] = e
	}
	return out, nil
}

// parseStaticBundle accepts PEM CA certificates or a SPIFFE bundle
// document (JWKS JSON, as `spire-server bundle show -format spiffe` and
// SPIFFE bundle endpoints serve).
func parseStaticBundle(tb configs.TrustBundle, data []byte, now time.Time) (bundleEntry, error) {
	td, err := spiffeid.TrustDomainFromString(tb.TrustDomain)
	if err != nil {
		return bundleEntry{}, err
	}
	var b *x509bundle.Bundle
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		sb, err := spiffebundle.Parse(td, data)
		if err != nil {
			return bundleEntry{}, fmt.Errorf("SPIFFE bundle JSON: %w", err)
		}
		b = x509bundle.FromX509Authorities(td, sb.X509Authorities())
	} else if b, err = x509bundle.Parse(td, data); err != nil {
		return bundleEntry{}, err
	}
	if b.Empty() {
		return bundleEntry{}, errors.New("no X.509 CA certificates")
	}
	return bundleEntry{b: b, origin: originStatic, file: tb.File, updated: now}, nil
}
