package configs

import (
	"os"
	"path/filepath"
	"testing"
)

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
