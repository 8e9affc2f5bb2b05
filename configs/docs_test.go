package configs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// yamlBlocks returns the ```yaml blocks of a Markdown file.
func yamlBlocks(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)```yaml\n(.*?)```")
	var out []string
	for _, m := range re.FindAllStringSubmatch(string(data), -1) {
		out = append(out, m[1])
	}
	return out
}

// TestDocsExamplesLoad: every YAML example in the README and the config
// reference loads, so the docs cannot drift from the loader. Blocks that
// reference files (certificates, policies) are parsed from the repo root
// so relative paths resolve. A block whose first line is
// "# fragment" is a snippet, not a file, and is skipped.
func TestDocsExamplesLoad(t *testing.T) {
	root, _ := filepath.Abs("..")
	files := []string{"README.md", "docs/configuration.md"}
	n := 0
	for _, f := range files {
		blocks := yamlBlocks(t, filepath.Join(root, f))
		for i, b := range blocks {
			if strings.HasPrefix(b, "# fragment") {
				continue
			}
			n++
			t.Run(f+"#"+string(rune('0'+i)), func(t *testing.T) {
				withDir(t, root, func() {
					if _, err := Parse(f, []byte(b), nil); err != nil {
						t.Fatalf("example %d of %s does not load:\n%v\n---\n%s", i, f, err, b)
					}
				})
			})
		}
	}
	if n == 0 {
		t.Fatal("no YAML examples found")
	}
}

// TestShippedConfigsLoad: the example reference and the packaged default.
func TestShippedConfigsLoad(t *testing.T) {
	root, _ := filepath.Abs("..")
	for _, f := range []string{"configs/ztgate.example.yaml", "packaging/ztgate.yaml", "configs/dev.yaml"} {
		t.Run(f, func(t *testing.T) {
			withDir(t, root, func() {
				if _, err := Load(f); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

func withDir(t *testing.T, dir string, fn func()) {
	t.Helper()
	old, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(old)
	fn()
}
