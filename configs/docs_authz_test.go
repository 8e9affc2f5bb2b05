package configs_test

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/configs"
)

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
