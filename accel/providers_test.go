//go:build cgo

package accel

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
)

// TestProviderLoadFailures covers what an operator gets wrong: a wrong
// libcrypto path, an OpenSSL provider that is not installed, a missing
// PKCS#11 module. Each gives an error naming the problem, and required
// decides between refusing to start and falling back to go.
func TestProviderLoadFailures(t *testing.T) {
	providers(t) // skips the openssl cases' premise check when libcrypto is absent
	brokenConf := filepath.Join(t.TempDir(), "openssl.cnf")
	os.WriteFile(brokenConf, []byte("[unterminated section\n"), 0o600)
	for _, tc := range []struct {
		name    string
		cfg     configs.Accel
		wantErr []string // substrings of the error with required: true
	}{
		{"missing libcrypto", configs.Accel{Provider: "openssl",
			OpenSSL: configs.AccelOpenSSL{Library: "/nonexistent/libcrypto.so.3"}},
			[]string{"/nonexistent/libcrypto.so.3", "No such file"}},
		{"not libcrypto", configs.Accel{Provider: "openssl",
			OpenSSL: configs.AccelOpenSSL{Library: "libc.so.6"}},
			[]string{"libc.so.6", "no symbol"}},
		{"missing OpenSSL provider", configs.Accel{Provider: "openssl",
			OpenSSL: configs.AccelOpenSSL{Provider: "qatprovider-not-installed"}},
			[]string{`OpenSSL provider "qatprovider-not-installed" cannot be loaded`, "MODULESDIR"}},
		{"broken openssl.cnf", configs.Accel{Provider: "openssl",
			OpenSSL: configs.AccelOpenSSL{Config: brokenConf}},
			[]string{"load config", brokenConf}},
		{"missing PKCS#11 module", configs.Accel{Provider: "pkcs11",
			PKCS11: configs.AccelPKCS11{Module: "/nonexistent/libsofthsm2.so", TokenLabel: "x"}},
			[]string{"/nonexistent/libsofthsm2.so", "no such file"}},
	} {
		t.Run(tc.name+"/required", func(t *testing.T) {
			cfg := tc.cfg
			cfg.Required = true
			_, err := New(cfg, Deps{Metrics: prometheus.NewRegistry()})
			if err == nil {
				t.Fatal("New succeeded with a broken required provider")
			}
			for _, w := range append(tc.wantErr, "required: true") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
		t.Run(tc.name+"/fallback", func(t *testing.T) {
			var logs bytes.Buffer
			e, err := New(tc.cfg, Deps{Metrics: prometheus.NewRegistry(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			if e.Provider() != "go" {
				t.Fatalf("provider %s, want the go fallback", e.Provider())
			}
			if got := value(e.m.fallbacks.WithLabelValues(tc.cfg.Provider, "unavailable")); got != 1 {
				t.Fatalf("fallbacks = %v, want 1", got)
			}
			if !strings.Contains(logs.String(), tc.wantErr[len(tc.wantErr)-1]) {
				t.Fatalf("log does not say why:\n%s", logs.String())
			}
		})
	}
}

func TestAutoPicksAProviderAndLogsCPU(t *testing.T) {
	want := "go"
	if _, ok := providers(t)["openssl"]; ok {
		want = "openssl" // 3x faster for RSA-2048 on every x86 CPU OpenSSL 3 knows
	}
	var logs bytes.Buffer
	e, err := New(configs.Accel{Provider: "auto"}, Deps{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Provider() != want {
		t.Errorf("auto chose %s, want %s\n%s", e.Provider(), want, logs.String())
	}
	ws := []string{"accel self-test", LogCPU + "=", "requested=auto"}
	if want == "openssl" {
		ws = append(ws, `version="OpenSSL 3`, "library=libcrypto.so.3")
	}
	for _, w := range ws {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, logs.String())
		}
	}
}

func TestUnknownProvider(t *testing.T) {
	if _, err := New(configs.Accel{Provider: "qat"}, Deps{}); err == nil || !strings.Contains(err.Error(), "go, openssl, pkcs11 or auto") {
		t.Fatalf("got %v", err)
	}
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEngine(t, configs.Accel{}, reg)
	c, err := e.Wrap(selfSigned(t, testKeys()["ecdsa_p256"]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PrivateKey.(crypto.Signer).Sign(rand.Reader, make([]byte, 32), crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	newTickets(t, configs.AccelSessions{}, reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range []string{"ztgate_accel_operations_total", "ztgate_accel_sign_seconds", "ztgate_accel_queue_depth",
		"ztgate_accel_batch_size", "ztgate_accel_keys", "ztgate_tls_ticket_key_rotations_total"} {
		if !got[name] {
			t.Errorf("metric %s is not registered", name)
		}
	}
	// A second engine on the same registry shares the series.
	e2, err := New(configs.Accel{}, Deps{Metrics: reg})
	if err != nil {
		t.Fatalf("second engine on one registry: %v", err)
	}
	e2.Close()
}
