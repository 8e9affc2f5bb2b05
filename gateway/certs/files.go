package certs

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// maxPEMFile bounds a certificate or key file read, so a wrong path (a
// log, a device) cannot make a reload allocate without limit.
const maxPEMFile = 1 << 20

// pkcs11Prefix marks a key kept in an HSM (RFC 7512 URI) instead of a file.
const pkcs11Prefix = "pkcs11:"

// fileCert is one files[] entry, loaded and checked.
type fileCert struct {
	key  string // config key path, e.g. listeners[0].tls.files[1]
	cert tls.Certificate
}

// loadFileCert reads a certificate chain and its key. Errors name the
// config key and the file, and say what to fix.
func loadFileCert(keyPath, certFile, keyFile string, loader func(string) (crypto.Signer, error), now time.Time) (tls.Certificate, error) {
	certPEM, err := readLimited(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s.cert: %w", keyPath, err)
	}
	chain, err := parseChain(certPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s.cert: %s: %w", keyPath, certFile, err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s.cert: %s: %w", keyPath, certFile, err)
	}
	if now.After(leaf.NotAfter) {
		return tls.Certificate{}, fmt.Errorf("%s.cert: %s: expired at %s (replace it with a current certificate)", keyPath, certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	var signer crypto.Signer
	if strings.HasPrefix(keyFile, pkcs11Prefix) {
		if loader == nil {
			return tls.Certificate{}, fmt.Errorf("%s.key: %q is an HSM key but no PKCS#11 provider is configured (set accel.provider: pkcs11)", keyPath, keyFile)
		}
		signer, err = loader(keyFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("%s.key: %q: %w", keyPath, keyFile, err)
		}
	} else {
		keyPEM, err := readLimited(keyFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("%s.key: %w", keyPath, err)
		}
		signer, err = parseKey(keyPEM)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("%s.key: %s: %w", keyPath, keyFile, err)
		}
	}
	if !publicKeysEqual(signer.Public(), leaf.PublicKey) {
		return tls.Certificate{}, fmt.Errorf("%s.key: %s does not match the certificate in %s (they must be a pair)", keyPath, keyFile, certFile)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: signer, Leaf: leaf}, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s: %v", path, pe.Err)
		}
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(data) > maxPEMFile {
		return nil, fmt.Errorf("%s: larger than %d KiB; is this a PEM file?", path, maxPEMFile>>10)
	}
	return data, nil
}

// parseChain returns the DER certificates of a PEM file, leaf first.
func parseChain(data []byte) ([][]byte, error) {
	var chain [][]byte
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			if _, err := x509.ParseCertificate(block.Bytes); err != nil {
				return nil, fmt.Errorf("certificate %d: %w", len(chain)+1, err)
			}
			chain = append(chain, block.Bytes)
		case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY":
			return nil, fmt.Errorf("holds a private key; cert must name the certificate chain and key the private key")
		}
	}
	if len(chain) == 0 {
		return nil, errors.New(`no PEM "CERTIFICATE" block found (expect the leaf certificate first, then intermediates)`)
	}
	return chain, nil
}

// parseKey parses a PEM private key: PKCS#8, SEC 1 (EC) or PKCS#1 (RSA).
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New(`no PEM private key block found (expect "PRIVATE KEY", "EC PRIVATE KEY" or "RSA PRIVATE KEY")`)
		}
		var k any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the key is encrypted; ztgate needs it unencrypted (protect it with file permissions, or keep it in an HSM with a pkcs11: URI)")
		case "CERTIFICATE":
			if bytes.Contains(data, []byte("PRIVATE KEY")) {
				continue
			}
			return nil, errors.New("holds a certificate, not a private key; key must name the private key file")
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", block.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("key type %T cannot sign", k)
		}
		return s, nil
	}
}

// publicKeyOf returns a KeyLoader that yields a signer-shaped stand-in
// for the certificate's own public key, so Check can validate a pkcs11:
// entry's certificate without opening the HSM. It never signs.
func publicKeyOf(certFile string) func(string) (crypto.Signer, error) {
	return func(string) (crypto.Signer, error) {
		data, err := readLimited(certFile)
		if err != nil {
			return nil, err
		}
		chain, err := parseChain(data)
		if err != nil {
			return nil, err
		}
		leaf, err := x509.ParseCertificate(chain[0])
		if err != nil {
			return nil, err
		}
		return unsignable{leaf.PublicKey}, nil
	}
}

type unsignable struct{ pub crypto.PublicKey }

func (u unsignable) Public() crypto.PublicKey { return u.pub }
func (u unsignable) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("certs: check only, no HSM key loaded")
}
