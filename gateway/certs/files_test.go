package certs

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func filesConfig(storage string, pairs ...[2]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "storage: %s\nlisteners:\n  - name: files\n    address: \"127.0.0.1:8443\"\n    tls:\n      files:\n", storage)
	for _, p := range pairs {
		fmt.Fprintf(&b, "        - { cert: %s, key: %s }\n", p[0], p[1])
	}
	return b.String()
}

func TestFilesReload(t *testing.T) {
	dir, storage := t.TempDir(), t.TempDir()
	ca := newTestCA(t)
	certPath, keyPath, first := ca.leaf(t, dir, "site", "site.ztgate.test")
	cfg := parseConfig(t, filesConfig(storage, [2]string{certPath, keyPath}))
	m := newManager(t, cfg, Deps{})
	if err := m.Ready(); err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, m, "files")
	served := func(t *testing.T) string {
		t.Helper()
		leaf, err := handshake(addr, "site.ztgate.test", ca.pool)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		return leaf.SerialNumber.String()
	}
	if got := served(t); got != first.SerialNumber.String() {
		t.Fatalf("served serial %s, want %s", got, first.SerialNumber)
	}

	// Replace the files in place and reload: the new pair is served.
	_, _, second := ca.leaf(t, dir, "site", "site.ztgate.test")
	if err := m.Apply(cfg); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got := served(t); got != second.SerialNumber.String() {
		t.Fatalf("after reload served %s, want the new %s", got, second.SerialNumber)
	}

	// Broken files: the reload fails naming file and key, the old
	// certificate keeps serving.
	otherCert, otherKey, _ := ca.leaf(t, dir, "other", "other.ztgate.test")
	for _, tc := range []struct {
		name    string
		prepare func()
		want    []string
	}{
		{"garbage certificate", func() { writeFile(t, certPath, []byte("garbage\n")) },
			[]string{"test.yaml: listeners[0].tls.files[0].cert: " + certPath, "no PEM \"CERTIFICATE\" block"}},
		{"key of another certificate", func() {
			data, _ := os.ReadFile(otherKey)
			writeFile(t, keyPath, data)
		}, []string{"listeners[0].tls.files[0].key: " + keyPath + " does not match the certificate in " + certPath}},
		{"key file is a certificate", func() {
			data, _ := os.ReadFile(otherCert)
			writeFile(t, keyPath, data)
		}, []string{"listeners[0].tls.files[0].key: " + keyPath, "holds a certificate, not a private key"}},
		{"missing file", func() { os.Remove(certPath) },
			[]string{"listeners[0].tls.files[0].cert: " + certPath + ": no such file or directory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _ = ca.leaf(t, dir, "site", "site.ztgate.test") // a fresh good pair...
			tc.prepare()                                          // ...then break it
			err := m.Apply(cfg)
			if err == nil {
				t.Fatal("Apply accepted a broken file")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if got := served(t); got != second.SerialNumber.String() {
				t.Errorf("after a failed reload served %s, want the old %s", got, second.SerialNumber)
			}
		})
	}
}
