package configs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/configs"
)

// TestDocsAuthn loads every ```yaml block of docs/authn.md. Paths under
// /etc/ztgate/ point into a temporary directory of placeholder files,
// because the loader checks that files exist.
func TestDocsAuthn(t *testing.T) {
	path := filepath.Join("..", "docs", "authn.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(doc, -1)
	if len(blocks) < 4 {
		t.Fatalf("%s: found %d yaml blocks, want the examples", path, len(blocks))
	}
	etc := t.TempDir()
	for _, p := range regexp.MustCompile(`/etc/ztgate/[\w./-]+`).FindAll(doc, -1) {
		f := filepath.Join(etc, strings.TrimPrefix(string(p), "/etc/ztgate/"))
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range blocks {
		t.Run(fmt.Sprintf("block%d", i), func(t *testing.T) {
			y := strings.ReplaceAll(string(b[1]), "/etc/ztgate/", etc+"/")
			if _, err := configs.Parse(path, []byte(y), nil); err != nil {
				t.Fatalf("block %d:\n%s\n%v", i, b[1], err)
			}
		})
	}
}

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
