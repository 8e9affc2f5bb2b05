package configs_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/configs"
)

// TestDocsCertificates loads every ```yaml block of docs/certificates.md.
// Paths under /etc/ztgate/ are moved into a temporary directory holding
// placeholder files, because the loader checks that files exist.
func TestDocsCertificates(t *testing.T) {
	path := filepath.Join("..", "docs", "certificates.md")
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
		t.Run("block"+string(rune('0'+i)), func(t *testing.T) {
			y := strings.ReplaceAll(string(b[1]), "/etc/ztgate/", etc+"/")
			cfg, err := configs.Parse(path, []byte(y), nil)
			if err != nil {
				t.Fatalf("block %d:\n%s\n%v", i, b[1], err)
			}
			hasTLS := false
			for _, l := range cfg.Listeners {
				hasTLS = hasTLS || l.TLS != nil
			}
			if !hasTLS {
				t.Fatalf("block %d has no TLS listener", i)
			}
		})
	}
}
