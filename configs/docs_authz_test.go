package configs_test

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/configs"
)

// TestDocsAuthz loads every ```yaml block of docs/authz.md. Paths under
// /etc/ztgate/ move into a temporary directory with placeholder files
// (and directories for names ending in .d), because the loader checks
// that they exist.
func TestDocsAuthz(t *testing.T) {
	path := filepath.Join("..", "docs", "authz.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(doc, -1)
	if len(blocks) < 5 {
		t.Fatalf("%s: found %d yaml blocks, want the reference and the examples", path, len(blocks))
	}
	etc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(etc, "policies"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range regexp.MustCompile(`/etc/ztgate/[\w./-]+`).FindAll(doc, -1) {
		f := filepath.Join(etc, strings.TrimPrefix(string(p), "/etc/ztgate/"))
		if strings.HasSuffix(f, ".d") {
			if err := os.MkdirAll(f, 0o700); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := os.Stat(filepath.Dir(f)); err != nil {
			continue // a file inside a .d directory, shown as prose
		}
		if err := os.WriteFile(f, []byte("placeholder\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range blocks {
		t.Run(string(rune('0'+i)), func(t *testing.T) {
			y := strings.ReplaceAll(string(b[1]), "/etc/ztgate/", etc+"/")
			if _, err := configs.Parse(path, []byte(y), nil); err != nil {
				t.Fatalf("block %d:\n%s\n%v", i, b[1], err)
			}
		})
	}
}

// TestAuthzTestdata loads configs/testdata/authz-*.yaml: good files
// load; each bad file starts with "# want: <error text>".
func TestAuthzTestdata(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "authz-*.yaml"))
	if len(files) < 5 {
		t.Fatalf("only %d testdata/authz-*.yaml files", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			data = append(data, []byte(authzListener)...)
			_, err = configs.Parse(f, data, nil)
			if strings.Contains(f, "-good-") {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			first, _, _ := bufio.NewReader(bytes.NewReader(data)).ReadLine()
			want, ok := strings.CutPrefix(string(first), "# want: ")
			if !ok {
				t.Fatalf("%s does not start with # want:", f)
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error = %v\nwant it to contain %q", err, want)
			}
		})
	}
}

// authzListener completes the testdata fragments into a loadable file.
const authzListener = "\nlisteners: [{name: public, address: \":8443\", tls: {names: [localhost]}}]\n"
