// Package testenv helps tests find external tools and the shared test
// data. It is imported by tests only.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RequireEnv is set by `make test`: a missing tool then fails the test
// instead of skipping it, so CI can never pass by skipping.
const RequireEnv = "TESTENV_REQUIRE_TOOLS"

// Tool returns the path of an external program. When it is missing the
// test is skipped with the reason, or fails under `make test`.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	Missing(t, name+" is not installed (make deps installs it)")
	return ""
}

// Missing skips (or, under make test, fails) the test for a missing
// prerequisite.
func Missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(RequireEnv) != "" {
		t.Fatalf("prerequisite missing: %s", why)
	}
	t.Skipf("skipped: %s", why)
}

// RepoRoot returns the directory holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// Shared returns the path of a file under ../shared (beside the checkout),
// or $TESTENV_SHARED when set. The data is read in place, never copied.
func Shared(t testing.TB, rel string) string {
	t.Helper()
	base := os.Getenv("TESTENV_SHARED")
	if base == "" {
		base = filepath.Join(RepoRoot(t), "..", "shared")
	}
	p := filepath.Join(base, rel)
	if _, err := os.Stat(p); err != nil {
		Missing(t, "shared test data "+p+" is not there ("+err.Error()+")")
	}
	return p
}

// Root reports whether the test runs as root (needed for port 53, netns).
func Root() bool { return os.Geteuid() == 0 }
