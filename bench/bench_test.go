package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/e2e/testenv"
)

// TestBenchSmoke runs one tiny round of every scenario against every
// installed peer: the peer configs must start and the parsers must read
// each load generator's output. It measures nothing.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: starts nginx, haproxy, caddy and load generators")
	}
	for _, tool := range []string{"taskset", "nginx", "haproxy", "wrk", "h2load", "caddy"} {
		testenv.Tool(t, tool)
	}
	root := testenv.RepoRoot(t)
	bin := t.TempDir()
	for _, b := range [][2]string{{"ztgate", "./cmd/ztgate"}, {"hsload", "./bench/cmd/hsload"}} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, b[0]), b[1])
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b[0], err, out)
		}
	}
	cmd := exec.Command("go", "run", "./bench/cmd/zbench", "-smoke",
		"-ztgate", filepath.Join(bin, "ztgate"), "-hsload", filepath.Join(bin, "hsload"))
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("zbench -smoke: %v\n%s", err, out)
	}
	for _, want := range []string{"proxy-h1/ztgate", "proxy-h2/caddy", "handshake-rsa/haproxy", "handshake-ecdsa/nginx"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("smoke output lacks %s:\n%s", want, out)
		}
	}
	t.Logf("%s", lastLine(string(out)))
	_ = os.Getenv
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
