package certs

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzPEM feeds arbitrary bytes to the certificate-chain and key parsers
// used on every reload: they must return an error, never panic, and
// accept only what they can use.
func FuzzPEM(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "pem", "*"))
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if chain, err := parseChain(data); err == nil && len(chain) == 0 {
			t.Fatal("parseChain accepted an empty chain")
		}
		if s, err := parseKey(data); err == nil && s == nil {
			t.Fatal("parseKey returned no key and no error")
		}
	})
}
