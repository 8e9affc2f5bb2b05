//go:build cgo

package accel

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/e2e/testenv"
)

const softhsmModule = "/usr/lib/softhsm/libsofthsm2.so"

// softHSM makes a SoftHSM2 token in a temp dir (SOFTHSM2_CONF points at
// it) and generates an RSA-2048 and an ECDSA P-256 key pair inside it
// with pkcs11-tool, as an operator would. It returns the PIN file.
func softHSM(t *testing.T) (pinFile string) {
	t.Helper()
	util := testenv.Tool(t, "softhsm2-util")
	tool := testenv.Tool(t, "pkcs11-tool")
	if _, err := os.Stat(softhsmModule); err != nil {
		testenv.Missing(t, softhsmModule+" is not installed (softhsm2)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	os.Mkdir(filepath.Join(dir, "tokens"), 0o700)
	os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600)
	t.Setenv("SOFTHSM2_CONF", conf)
	run(t, util, "--init-token", "--free", "--label", "ztgate", "--pin", "1234", "--so-pin", "5678")
	for _, k := range []struct{ typ, label, id string }{{"rsa:2048", "web-rsa", "01"}, {"EC:prime256v1", "web-ec", "02"}} {
		run(t, tool, "--module", softhsmModule, "--token-label", "ztgate", "--login", "--pin", "1234",
			"--keypairgen", "--key-type", k.typ, "--label", k.label, "--id", k.id)
	}
	pinFile = filepath.Join(dir, "pin")
	os.WriteFile(pinFile, []byte("1234\n"), 0o600)
	return pinFile
}

func TestSoftHSMEndToEnd(t *testing.T) {
	pinFile := softHSM(t)
	reg := prometheus.NewRegistry()
	e := newEngine(t, configs.Accel{Provider: "pkcs11", Required: true,
		PKCS11: configs.AccelPKCS11{Module: softhsmModule, TokenLabel: "ztgate", PinFile: pinFile}}, reg)
	if e.Provider() != "pkcs11" {
		t.Fatalf("provider %s", e.Provider())
	}
	for _, tc := range []struct{ name, uri, keyType string }{
		{"rsa by label", "pkcs11:token=ztgate;object=web-rsa;type=private", "rsa2048"},
		{"ecdsa by id, PIN in URI", "pkcs11:token=ztgate;id=%02?pin-value=1234&module-path=" + softhsmModule, "ecdsa_p256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := e.LoadKey(tc.uri)
			if err != nil {
				t.Fatal(err)
			}
			if kt := KeyType(s.Public()); kt != tc.keyType {
				t.Fatalf("key type %s, want %s", kt, tc.keyType)
			}
			// Signatures made inside the token verify with Go.
			opts := []crypto.SignerOpts{crypto.SHA256, crypto.SHA384}
			if tc.keyType == "rsa2048" {
				opts = append(opts, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
			}
			for _, o := range opts {
				for range 4 {
					msg := make([]byte, 100)
					rand.Read(msg)
					d := hashOf(o.HashFunc(), msg)
					sig, err := s.Sign(rand.Reader, d, o)
					if err != nil {
						t.Fatal(err)
					}
					if err := verify(s.Public(), d, sig, o); err != nil {
						t.Fatal(err)
					}
				}
			}
			// A certificate for the HSM key, signed by the HSM key, and
			// real handshakes through it.
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hsm"},
				NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
				IPAddresses: []net.IP{{127, 0, 0, 1}}, DNSNames: []string{"localhost"},
				KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
			if err != nil {
				t.Fatal(err)
			}
			cert := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: s}
			addr, ca := serveTLS(t, e, cert, nil)
			okC := e.m.ops.WithLabelValues("pkcs11", tc.keyType, ResultOK)
			before := value(okC)
			out := run(t, testenv.Tool(t, "openssl"), "s_client", "-connect", addr, "-tls1_3", "-CAfile", ca, "-verify_return_error", "-brief")
			if !strings.Contains(out, "Verification: OK") {
				t.Fatal(out)
			}
			if out := run(t, testenv.Tool(t, "curl"), "-sS", "--max-time", "10", "--cacert", ca, "--tlsv1.2", "--tls-max", "1.2", "https://"+addr+"/"); out != "ok" {
				t.Fatalf("curl: %q", out)
			}
			if got := value(okC) - before; got != 2 {
				t.Fatalf("HSM signed %v times for two handshakes, want 2", got)
			}
		})
	}

	// ztgate accel bench measures an HSM key.
	var out bytes.Buffer
	err := Bench(context.Background(), &out, BenchOptions{Providers: []string{"pkcs11"},
		PKCS11:    configs.AccelPKCS11{Module: softhsmModule, TokenLabel: "ztgate", PinFile: pinFile},
		PKCS11Key: "pkcs11:object=web-rsa", SignDuration: 20 * time.Millisecond, HandshakeDuration: 100 * time.Millisecond, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`pkcs11\s+rsa2048\s+\d+`).Match(out.Bytes()) || strings.Contains(out.String(), "error:") {
		t.Fatalf("bench with the HSM key:\n%s", out.String())
	}

	// The private keys cannot leave the token.
	c, err := crypto11.Configure(&crypto11.Config{Path: softhsmModule, TokenLabel: "ztgate", Pin: "1234"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, label := range []string{"web-rsa", "web-ec"} {
		k, err := c.FindKeyPair(nil, []byte(label))
		if err != nil || k == nil {
			t.Fatalf("find %s: %v", label, err)
		}
		attrs, err := c.GetAttributes(k, []crypto11.AttributeType{crypto11.CkaExtractable, crypto11.CkaSensitive})
		if err != nil {
			t.Fatal(err)
		}
		if v := attrs[crypto11.CkaExtractable].Value; len(v) != 1 || v[0] != 0 {
			t.Errorf("%s: CKA_EXTRACTABLE = %v, want false", label, v)
		}
		if v := attrs[crypto11.CkaSensitive].Value; len(v) != 1 || v[0] != 1 {
			t.Errorf("%s: CKA_SENSITIVE = %v, want true", label, v)
		}
		secret := crypto11.CkaPrivateExponent
		if label == "web-ec" {
			secret = crypto11.CkaValue
		}
		if a, err := c.GetAttribute(k, secret); err == nil && a != nil && len(a.Value) > 0 {
			t.Errorf("%s: the secret part of the key was read from the token", label)
		}
	}
}

func TestPKCS11Errors(t *testing.T) {
	pinFile := softHSM(t)
	e := newEngine(t, configs.Accel{PKCS11: configs.AccelPKCS11{Module: softhsmModule, PinFile: pinFile}}, prometheus.NewRegistry())
	for _, tc := range []struct{ name, uri, want string }{
		// First, while no context is logged in to the token.
		{"wrong PIN", "pkcs11:token=ztgate;object=web-rsa?pin-value=9999", "wrong PIN"},
		{"missing module", "pkcs11:token=ztgate;object=web-rsa?module-path=/nonexistent/p11.so", "/nonexistent/p11.so"},
		{"missing token", "pkcs11:token=nosuch;object=web-rsa", "token not found"},
		{"missing key", "pkcs11:token=ztgate;object=nosuch", "no key pair matches"},
		{"no key named", "pkcs11:token=ztgate", "names no key"},
		{"not a URI", "/etc/key.pem", `must start with "pkcs11:"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.LoadKey(tc.uri)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "9999") || strings.Contains(err.Error(), "1234") {
				t.Fatalf("error shows the PIN: %v", err)
			}
		})
	}
	// provider: pkcs11 with a token that is not there follows required.
	cfg := configs.Accel{Provider: "pkcs11", Required: true, PKCS11: configs.AccelPKCS11{Module: softhsmModule, TokenLabel: "nosuch", PinFile: pinFile}}
	if _, err := New(cfg, Deps{}); err == nil || !strings.Contains(err.Error(), "token not found") {
		t.Fatalf("required pkcs11 with a missing token: %v", err)
	}
	cfg.Required = false
	e2 := newEngine(t, cfg, prometheus.NewRegistry())
	if e2.Provider() != "go" {
		t.Fatalf("provider %s, want go fallback", e2.Provider())
	}
}
