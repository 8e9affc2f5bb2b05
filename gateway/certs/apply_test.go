package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestApplyRefuses(t *testing.T) {
	storage := t.TempDir()
	m := newManager(t, parseConfig(t, localCAConfig(storage, "localhost")), Deps{})
	addr := serveTLS(t, m, "public")
	roots := poolFromFile(t, m.LocalCARoot())
	caRoot := m.LocalCARoot()
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"storage change", localCAConfig(t.TempDir(), "localhost"), "test.yaml: storage: changing"},
		{"one name from two sources", localCAConfig(storage, "localhost") + fmt.Sprintf(`
  - name: acme
    address: "127.0.0.1:9443"
    tls:
      names: [localhost]
      acme: { directory: "https://127.0.0.1:1/dir", ca_root: %s }
`, caRoot), `test.yaml: listeners[1].tls.names[0]: "localhost" is also served by listeners[0] with another certificate source`},
		{"acme wildcard", localCAConfig(storage, "localhost") + fmt.Sprintf(`
  - name: acme
    address: "127.0.0.1:9443"
    tls:
      names: ["*.wild.ztgate.test"]
      acme: { directory: "https://127.0.0.1:1/dir", ca_root: %s }
`, caRoot), `test.yaml: listeners[1].tls.names[0]: "*.wild.ztgate.test": ACME issues wildcard certificates only with the DNS-01 challenge`},
		{"acme ca_root without certificates", localCAConfig(storage, "localhost") + fmt.Sprintf(`
  - name: acme
    address: "127.0.0.1:9443"
    tls:
      names: [acme.ztgate.test]
      acme: { directory: "https://127.0.0.1:1/dir", ca_root: %s }
`, storage+"/ca/root.key"), "test.yaml: listeners[1].tls.acme: ca_root: " + storage + "/ca/root.key: no PEM CERTIFICATE found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := m.Apply(parseConfig(t, tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply() = %v, want it to contain %q", err, tc.want)
			}
			if _, err := handshake(addr, "localhost", roots); err != nil {
				t.Fatalf("old certificate no longer served: %v", err)
			}
			if err := m.Ready(); err != nil {
				t.Fatalf("Ready after a refused Apply: %v", err)
			}
		})
	}
}

// TestFilesPKCS11Key: a "pkcs11:" key goes through Deps.KeyLoader (the
// accel engine's HSM loader in production; an in-memory signer here).
func TestFilesPKCS11Key(t *testing.T) {
	dir, storage := t.TempDir(), t.TempDir()
	ca := newTestCA(t)
	certPath, keyPath, leaf := ca.leaf(t, dir, "hsm", "hsm.ztgate.test")
	keyPEM, _ := os.ReadFile(keyPath)
	signer, err := parseKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	const uri = "pkcs11:token=ztgate;object=hsm"
	yaml := filesConfig(storage, [2]string{certPath, uri})

	t.Run("no loader configured", func(t *testing.T) {
		_, err := New(parseConfig(t, yaml), Deps{})
		if err == nil || !strings.Contains(err.Error(), `listeners[0].tls.files[0].key: "`+uri+`" is an HSM key but no PKCS#11 provider is configured`) {
			t.Fatalf("New() = %v", err)
		}
	})
	t.Run("loader error", func(t *testing.T) {
		_, err := New(parseConfig(t, yaml), Deps{KeyLoader: func(string) (crypto.Signer, error) { return nil, errors.New("token not present") }})
		if err == nil || !strings.Contains(err.Error(), `listeners[0].tls.files[0].key: "`+uri+`": token not present`) {
			t.Fatalf("New() = %v", err)
		}
	})
	t.Run("wrong key in the HSM", func(t *testing.T) {
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, err := New(parseConfig(t, yaml), Deps{KeyLoader: func(string) (crypto.Signer, error) { return other, nil }})
		if err == nil || !strings.Contains(err.Error(), "does not match the certificate") {
			t.Fatalf("New() = %v", err)
		}
	})
	t.Run("served", func(t *testing.T) {
		var asked string
		m := newManager(t, parseConfig(t, yaml), Deps{KeyLoader: func(u string) (crypto.Signer, error) { asked = u; return signer, nil }})
		if asked != uri {
			t.Fatalf("KeyLoader got %q", asked)
		}
		got, err := handshake(serveTLS(t, m, "files"), "hsm.ztgate.test", ca.pool)
		if err != nil {
			t.Fatal(err)
		}
		if got.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			t.Fatal("served another certificate")
		}
	})
}

func TestParseKeyForms(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(k)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(k)
	for _, tc := range []struct {
		name, typ string
		der       []byte
		wantErr   string
	}{
		{"pkcs8", "PRIVATE KEY", pkcs8, ""},
		{"sec1", "EC PRIVATE KEY", sec1, ""},
		{"encrypted", "ENCRYPTED PRIVATE KEY", []byte{1}, "the key is encrypted"},
		{"corrupt", "PRIVATE KEY", []byte{1, 2, 3}, "PRIVATE KEY: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseKey(pem.EncodeToMemory(&pem.Block{Type: tc.typ, Bytes: tc.der}))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !publicKeysEqual(s.Public(), k.Public()) {
				t.Fatalf("parseKey: %v", err)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	dir, storage := t.TempDir(), t.TempDir()
	ca := newTestCA(t)
	certPath, keyPath, _ := ca.leaf(t, dir, "site", "site.ztgate.test")
	_, otherKey, _ := ca.leaf(t, dir, "other", "other.ztgate.test")
	for _, tc := range []struct{ name, yaml, want string }{
		{"good files", filesConfig(storage, [2]string{certPath, keyPath}), ""},
		{"hsm key not opened", filesConfig(storage, [2]string{certPath, "pkcs11:token=x;object=y"}), ""},
		{"mismatched key", filesConfig(storage, [2]string{certPath, otherKey}), "test.yaml: listeners[0].tls.files[0].key: " + otherKey + " does not match"},
		{"bad ca_root", fmt.Sprintf("storage: %s\nlisteners:\n  - name: a\n    address: \"127.0.0.1:1\"\n    tls: { names: [a.test], acme: { directory: \"https://127.0.0.1:1/dir\", ca_root: %s } }\n", storage, keyPath),
			"test.yaml: listeners[0].tls.acme: ca_root: " + keyPath + ": no PEM CERTIFICATE found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(parseConfig(t, tc.yaml), Deps{})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check() = %v, want %q", err, tc.want)
			}
		})
	}
	if entries, _ := os.ReadDir(storage); len(entries) != 0 {
		t.Fatalf("Check wrote to storage: %v", entries)
	}
}
