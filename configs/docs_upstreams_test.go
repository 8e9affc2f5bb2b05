package configs_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/ztgate/ztgate/configs"
)

// TestDocsUpstreams loads every ```yaml block of docs/upstreams.md: the
// reference must show configs the loader accepts.
func TestDocsUpstreams(t *testing.T) {
	path := filepath.Join("..", "docs", "upstreams.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(doc, -1)
	if len(blocks) < 3 {
		t.Fatalf("%s: found %d yaml blocks, want the examples", path, len(blocks))
	}
	for i, b := range blocks {
		t.Run("block"+string(rune('0'+i)), func(t *testing.T) {
			cfg, err := configs.Parse(path, b[1], nil)
			if err != nil {
				t.Fatalf("block %d:\n%s\n%v", i, b[1], err)
			}
			if len(cfg.Upstreams) == 0 {
				t.Fatalf("block %d defines no upstream", i)
			}
		})
	}
}
