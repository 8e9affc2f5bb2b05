//go:build !cgo

package accel

import (
	"strings"
	"testing"

	"github.com/ztgate/ztgate/configs"
)

// Without cgo there is no libcrypto and no PKCS#11: required refuses to
// start and says why; otherwise go serves.
func TestNoCgoProviders(t *testing.T) {
	for _, p := range []string{"openssl", "pkcs11"} {
		cfg := configs.Accel{Provider: p, Required: true, PKCS11: configs.AccelPKCS11{Module: "/m.so", TokenLabel: "t"}}
		if _, err := New(cfg, Deps{}); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
			t.Errorf("%s required without cgo: %v", p, err)
		}
		cfg.Required = false
		e, err := New(cfg, Deps{})
		if err != nil {
			t.Fatal(err)
		}
		if e.Provider() != "go" {
			t.Errorf("%s without cgo: provider %s, want go", p, e.Provider())
		}
		e.Close()
	}
}
