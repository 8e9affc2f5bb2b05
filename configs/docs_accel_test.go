package configs_test

import (
	"strings"
	"testing"

	"github.com/ztgate/ztgate/configs"
)

const accelTestListener = "\nlisteners: [{name: public, address: \":8443\", tls: {names: [localhost]}}]\n"

func TestAccelValidation(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"provider", "accel: {provider: qat}", `accel.provider: "qat" is not valid (use one of: go, openssl, pkcs11, auto)`},
		{"batch size", "accel: {batch: {size: 100}}", "accel.batch.size: 100 is out of range (use 1-64)"},
		{"deadline", "accel: {batch: {deadline: 1s}}", "accel.batch.deadline: 1s is out of range"},
		{"workers", "accel: {workers: -1}", "accel.workers: -1 is out of range"},
		{"timeout", "accel: {timeout: 1us}", "accel.timeout: 1µs is too short"},
		{"pkcs11 module", "accel: {provider: pkcs11}", "accel.pkcs11.module: must name the PKCS#11 library"},
		{"pin file", "accel: {pkcs11: {pin_file: /nonexistent/pin}}", `accel.pkcs11.pin_file: "/nonexistent/pin" cannot be read`},
		{"openssl provider path", "accel: {openssl: {provider: /usr/lib/qat.so}}", "accel.openssl.provider: \"/usr/lib/qat.so\" is not a provider name"},
		{"rotation", "accel: {session_tickets: {rotation: 1s}}", "accel.session_tickets.rotation: 1s is out of range"},
		{"key file", "accel: {session_tickets: {key_file: /nonexistent/k}}", `accel.session_tickets.key_file: "/nonexistent/k" cannot be read`},
		{"typo", "accel: {provder: go}", "provder"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := configs.Parse("z.yaml", []byte(tc.yaml+accelTestListener), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %q", err, tc.want)
			}
		})
	}
	cfg, err := configs.Parse("z.yaml", []byte(accelTestListener), nil)
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Accel
	if a.Provider != "go" || a.Batch.Size != 8 || a.Batch.Deadline != 0 || a.OpenSSL.Library != "libcrypto.so.3" || a.Sessions.Rotation.String() != "1h0m0s" || a.Timeout.String() != "2s" {
		t.Fatalf("defaults: %+v", a)
	}
}
