package certs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
)

// Local CA files under the storage directory.
const (
	caDir      = "ca"
	caRootFile = "root.pem"
	caKeyFile  = "root.key"
	// caLifetime is the validity of a newly created local CA root.
	caLifetime = 10 * 365 * 24 * time.Hour
	// localCAIssuerPrefix starts the local CA's certmagic issuer key.
	localCAIssuerPrefix = "ztgate-local-ca-"
)

// localCA is the gateway's own CA: a self-signed ECDSA P-256 root kept
// under storage/ca, used as a certmagic Issuer so certmagic issues and
// renews the leaf certificates like any other CA's.
type localCA struct {
	root     *x509.Certificate
	key      crypto.Signer
	rootPath string
	// lifetime of issued leaves; a reload may change it.
	lifetime atomic.Int64
}

var _ certmagic.Issuer = (*localCA)(nil)

// caRootPath returns where the local CA's root certificate lives.
func caRootPath(storage string) string { return filepath.Join(storage, caDir, caRootFile) }

// loadOrCreateCA loads the CA from storage/ca, creating it on first use.
// An existing CA is never replaced: deleting the directory is how an
// operator rotates it.
func loadOrCreateCA(storage, name string) (*localCA, error) {
	dir := filepath.Join(storage, caDir)
	certPath, keyPath := filepath.Join(dir, caRootFile), filepath.Join(dir, caKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return parseCA(certPath, certPEM, keyPath, keyPEM)
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return createCA(dir, certPath, keyPath, name)
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, fmt.Errorf("local CA: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, fmt.Errorf("local CA: %w", keyErr)
	case certErr != nil:
		return nil, fmt.Errorf("local CA: %s exists but %s does not (restore it, or remove the %s directory to create a new CA)", keyPath, certPath, dir)
	default:
		return nil, fmt.Errorf("local CA: %s exists but %s does not (restore it, or remove the %s directory to create a new CA)", certPath, keyPath, dir)
	}
}

func parseCA(certPath string, certPEM []byte, keyPath string, keyPEM []byte) (*localCA, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("local CA: %s: no PEM CERTIFICATE block", certPath)
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("local CA: %s: %w", certPath, err)
	}
	if !root.IsCA {
		return nil, fmt.Errorf("local CA: %s is not a CA certificate", certPath)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("local CA: %s: no PEM private key block", keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		if ek, err2 := x509.ParseECPrivateKey(kb.Bytes); err2 == nil {
			k = ek
		} else {
			return nil, fmt.Errorf("local CA: %s: %w", keyPath, err)
		}
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("local CA: %s: key type %T cannot sign", keyPath, k)
	}
	if !publicKeysEqual(signer.Public(), root.PublicKey) {
		return nil, fmt.Errorf("local CA: %s does not match %s (restore the pair, or remove the directory to create a new CA)", keyPath, certPath)
	}
	return &localCA{root: root, key: signer, rootPath: certPath}, nil
}

func createCA(dir, certPath, keyPath, name string) (*localCA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("local CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("local CA: generate key: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("local CA: %w", err)
	}
	skid := sha1.Sum(spki)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"ztgate"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          skid[:],
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("local CA: create root: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("local CA: %w", err)
	}
	// The key first, 0600: a root without its key is unusable, a key
	// without its root is detected on the next start.
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, fmt.Errorf("local CA: %w", err)
	}
	if err := writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, fmt.Errorf("local CA: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("local CA: %w", err)
	}
	return &localCA{root: root, key: key, rootPath: certPath}, nil
}

// writeFileAtomic writes through a temporary file and rename, so a crash
// never leaves half a key behind.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func randomSerial() *big.Int {
	// 128 random bits, positive (RFC 5280 allows up to 20 octets).
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[0] &= 0x7f
	return new(big.Int).SetBytes(b)
}

// IssuerKey names this CA in certmagic's storage. It includes the root's
// key id, so certificates of a replaced CA are never loaded again.
func (ca *localCA) IssuerKey() string {
	id := ca.root.SubjectKeyId
	if len(id) > 8 {
		id = id[:8]
	}
	return localCAIssuerPrefix + hex.EncodeToString(id)
}

// Issue signs a leaf certificate for the names in the CSR: DNS names and
// IP SANs, server auth only, valid for the configured leaf lifetime.
func (ca *localCA) Issue(_ context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("local CA: bad CSR signature: %w", err)
	}
	if len(csr.DNSNames) == 0 && len(csr.IPAddresses) == 0 {
		return nil, errors.New("local CA: CSR names no DNS name or IP address")
	}
	now := time.Now()
	notAfter := now.Add(time.Duration(ca.lifetime.Load()))
	if notAfter.After(ca.root.NotAfter) {
		notAfter = ca.root.NotAfter
	}
	cn := ""
	if len(csr.DNSNames) > 0 {
		cn = csr.DNSNames[0]
	} else {
		cn = csr.IPAddresses[0].String()
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: cn},
		DNSNames:              csr.DNSNames,
		IPAddresses:           append([]net.IP(nil), csr.IPAddresses...),
		NotBefore:             now.Add(-time.Minute), // tolerate small clock skew
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("local CA: sign: %w", err)
	}
	return &certmagic.IssuedCertificate{Certificate: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// issued reports whether leaf was signed by this CA.
func (ca *localCA) issued(leaf *x509.Certificate) bool {
	return leaf != nil && bytes.Equal(leaf.RawIssuer, ca.root.RawSubject) &&
		bytes.Equal(leaf.AuthorityKeyId, ca.root.SubjectKeyId)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
