package configs_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ztgate/ztgate/configs"
)

// TestAuthnDefaults: a provider with only an issuer and a JWKS gets the
// documented defaults.
func TestAuthnDefaults(t *testing.T) {
	good, _ := filepath.Glob(filepath.Join("testdata", "authn-good-*.yaml"))
	for _, f := range good {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, _ := os.ReadFile(f)
			cfg, err := configs.Parse(f, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			p := cfg.Authn.JWT[0]
			if p.Name != p.Issuer || len(p.Algorithms) != len(configs.JWTAlgorithms) || p.ClockSkew != configs.DefaultJWTClockSkew ||
				p.MaxTokenBytes != configs.DefaultMaxTokenBytes || len(p.FromHeaders) != 1 || p.FromHeaders[0].Prefix != "Bearer " ||
				len(p.FromParams) != 1 || cfg.Authn.TokenCacheSize != configs.DefaultTokenCacheSize {
				t.Errorf("defaults not applied: %+v", p)
			}
		})
	}
}
