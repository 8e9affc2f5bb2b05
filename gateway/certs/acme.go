package certs

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"net/http"
	"slices"

	"github.com/caddyserver/certmagic"

	"github.com/ztgate/ztgate/configs"
)

// acmeSource is one ACME account and CA (one distinct acme: block); the
// listeners that share the same settings share it.
type acmeSource struct {
	key    string
	cfg    *certmagic.Config
	issuer *certmagic.ACMEIssuer
	// names is what is managed now, each with the cancel of its obtain
	// work (retries included); want is what the plan being applied needs (Apply
	// makes the keys of names equal want).
	names map[string]context.CancelFunc
	want  map[string]bool
}

// acmeKey identifies an acme: block by everything that shapes its
// certmagic issuer, including the content of the CA root file (so a
// replaced root is picked up on reload).
func acmeKey(t *configs.ListenerTLS) (string, error) {
	a := t.ACME
	rootSum := ""
	if a.CARoot != "" {
		data, err := readLimited(a.CARoot)
		if err != nil {
			return "", err
		}
		rootSum = fmt.Sprintf("%x", sha256.Sum256(data))
	}
	ch := slices.Clone(a.Challenges)
	slices.Sort(ch)
	ocsp := t.OCSPStapling == nil || *t.OCSPStapling
	return fmt.Sprintf("%s|%s|%s|%v|%d|%d|%v", a.Directory, a.Email, rootSum, ch, a.HTTPPort, a.TLSALPNPort, ocsp), nil
}

// loadCARoot reads an acme.ca_root file; nil for "" (system roots).
func loadCARoot(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	data, err := readLimited(path)
	if err != nil {
		return nil, fmt.Errorf("ca_root: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("ca_root: %s: no PEM CERTIFICATE found (it must hold the CA's root certificate)", path)
	}
	return roots, nil
}

func checkCARoot(path string) error {
	_, err := loadCARoot(path)
	return err
}

func (m *Manager) newACMESource(key string, t *configs.ListenerTLS) (*acmeSource, error) {
	a := t.ACME
	roots, err := loadCARoot(a.CARoot)
	if err != nil {
		return nil, err
	}
	ocsp := t.OCSPStapling == nil || *t.OCSPStapling
	cfg := m.newCertmagicConfig(nil, ocsp)
	iss := certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
		CA:                      a.Directory,
		Email:                   a.Email,
		Agreed:                  true,
		TrustedRoots:            roots,
		DisableHTTPChallenge:    !slices.Contains(a.Challenges, "http-01"),
		DisableTLSALPNChallenge: !slices.Contains(a.Challenges, "tls-alpn-01"),
		AltHTTPPort:             a.HTTPPort,
		AltTLSALPNPort:          a.TLSALPNPort,
		Logger:                  cfg.Logger,
	})
	cfg.Issuers = []certmagic.Issuer{iss}
	return &acmeSource{key: key, cfg: cfg, issuer: iss, names: map[string]context.CancelFunc{}}, nil
}

// HTTPChallengeHandler answers ACME HTTP-01 challenges
// (/.well-known/acme-challenge/...) for every ACME source, and passes any
// other request to next. Mount it on the plain-HTTP listener, in front of
// the HTTPS redirect.
func (m *Manager) HTTPChallengeHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if certmagic.LooksLikeHTTPChallenge(r) {
			if s := m.snap.Load(); s != nil {
				for _, a := range s.acme {
					if a.issuer.HandleHTTPChallenge(w, r) {
						return
					}
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}
