package configs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/configs"
)

// TestAuthnConfigErrors: every broken file in testdata/authn-bad-*.yaml
// fails with the message in its first line ("# want: ...").
func TestAuthnConfigErrors(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "authn-bad-*.yaml"))
	if len(files) == 0 {
		t.Fatal("no testdata/authn-bad-*.yaml")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("%s: first line must be '# want: <error text>'", f)
			}
			_, err = configs.Parse(f, data, nil)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %v\nwant it to contain %q", err, want)
			}
		})
	}
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
