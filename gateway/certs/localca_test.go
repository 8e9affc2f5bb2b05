package certs

import (
	"crypto/ecdsa"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/e2e/testenv"
)

func localCAConfig(storage string, names ...string) string {
	return fmt.Sprintf(`
storage: %s
tls:
  local_ca: { name: "test local CA", leaf_lifetime: 48h }
listeners:
  - name: public
    address: "127.0.0.1:8443"
    tls:
      names: [%s]
`, storage, strings.Join(quoteAll(names), ", "))
}

func quoteAll(ns []string) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = fmt.Sprintf("%q", n)
	}
	return out
}

func TestLocalCAIssueAndHandshake(t *testing.T) {
	storage := t.TempDir()
	cfg := parseConfig(t, localCAConfig(storage, "localhost", "api.ztgate.test", "127.0.0.1", "::1"))
	m := newManager(t, cfg, Deps{})
	if err := m.Ready(); err != nil {
		t.Fatalf("Ready after New: %v", err)
	}
	root := m.LocalCARoot()
	if root != filepath.Join(storage, "ca", "root.pem") {
		t.Fatalf("LocalCARoot = %q", root)
	}
	st, err := os.Stat(filepath.Join(storage, "ca", "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("root.key mode = %v, want 0600", st.Mode().Perm())
	}
	roots := poolFromFile(t, root)
	addr := serveTLS(t, m, "public")

	for _, tc := range []struct{ name, serverName string }{
		{"dns name", "localhost"},
		{"second dns name", "api.ztgate.test"},
		{"ip literal without SNI", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf, err := handshake(addr, tc.serverName, roots)
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
				t.Errorf("leaf key is %T, want ECDSA", leaf.PublicKey)
			}
			if got := leaf.NotAfter.Sub(leaf.NotBefore); got < 47*time.Hour || got > 49*time.Hour {
				t.Errorf("leaf lifetime %s, want about 48h (leaf_lifetime)", got)
			}
		})
	}
	t.Run("unknown name refused", func(t *testing.T) {
		if _, err := handshake(addr, "other.ztgate.test", roots); err == nil {
			t.Fatal("handshake for a name that is not configured succeeded")
		}
	})
	t.Run("curl --cacert", func(t *testing.T) {
		curl := testenv.Tool(t, "curl")
		_, port, _ := net.SplitHostPort(addr)
		out, err := exec.Command(curl, "-sS", "--max-time", "10", "--cacert", root,
			"--resolve", "api.ztgate.test:"+port+":127.0.0.1", "https://api.ztgate.test:"+port+"/").CombinedOutput()
		if err != nil || string(out) != "ok\n" {
			t.Fatalf("curl: %v: %s", err, out)
		}
	})

	// A second process on the same storage keeps the CA and the leaf.
	first, err := handshake(addr, "localhost", roots)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, _ := os.ReadFile(root)
	m.Stop()
	m2 := newManager(t, parseConfig(t, localCAConfig(storage, "localhost")), Deps{})
	rootPEM2, _ := os.ReadFile(m2.LocalCARoot())
	if string(rootPEM) != string(rootPEM2) {
		t.Fatal("the local CA root was replaced on restart")
	}
	addr2 := serveTLS(t, m2, "public")
	again, err := handshake(addr2, "localhost", roots)
	if err != nil {
		t.Fatal(err)
	}
	if again.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Errorf("restart issued a new leaf (serial %s, was %s); want the stored one", again.SerialNumber, first.SerialNumber)
	}
}

func TestLocalCAReloadAddsAndRemovesNames(t *testing.T) {
	storage := t.TempDir()
	m := newManager(t, parseConfig(t, localCAConfig(storage, "a.ztgate.test")), Deps{})
	addr := serveTLS(t, m, "public")
	roots := poolFromFile(t, m.LocalCARoot())
	if _, err := handshake(addr, "b.ztgate.test", roots); err == nil {
		t.Fatal("b served before it was configured")
	}
	if err := m.Apply(parseConfig(t, localCAConfig(storage, "b.ztgate.test"))); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, "b.ztgate.test", roots); err != nil {
		t.Fatalf("b after reload: %v", err)
	}
	if _, err := handshake(addr, "a.ztgate.test", roots); err == nil {
		t.Fatal("a still served after it was removed")
	}
}

func TestLocalCABrokenStorage(t *testing.T) {
	storage := t.TempDir()
	if err := os.MkdirAll(filepath.Join(storage, "ca"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(storage, "ca", "root.pem"), []byte("not a cert"))
	writeFile(t, filepath.Join(storage, "ca", "root.key"), []byte("not a key"))
	_, err := New(parseConfig(t, localCAConfig(storage, "localhost")), Deps{})
	if err == nil || !strings.Contains(err.Error(), "root.pem: no PEM CERTIFICATE block") {
		t.Fatalf("err = %v, want it to name root.pem", err)
	}
}
