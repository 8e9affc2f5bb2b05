package bench

import (
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ztgate/ztgate/e2e/testenv"
)

// TestBenchSmoke runs one tiny round of every scenario against every
// installed peer: the peer configs must start, each peer must pass the
// scenario's checks (tokens verified, allowlist enforced, DNS answers
// right), and the parsers must read each load generator's output. It
// measures nothing. A ztgate feature this build does not have yet (its
// config refused by `ztgate validate`, or accepted and not acted on) is
// reported, not failed.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: starts nginx, haproxy, caddy, coredns, dnsmasq and load generators")
	}
	for _, tool := range []string{"taskset", "nginx", "haproxy", "wrk", "h2load", "caddy", "coredns", "dnsperf", "dnsmasq", "curl"} {
		testenv.Tool(t, tool)
	}
	root := testenv.RepoRoot(t)
	bin := t.TempDir()
	tools := [][2]string{{"ztgate", "./cmd/ztgate"}, {"zbench", "./bench/cmd/zbench"}, {"hsload", "./bench/cmd/hsload"},
		{"h3load", "./bench/cmd/h3load"}, {"idleconns", "./bench/cmd/idleconns"}, {"dnsstub", "./bench/cmd/dnsstub"}}
	var wg sync.WaitGroup
	errs := make([]string, len(tools))
	for i, b := range tools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("go", "build", "-o", filepath.Join(bin, b[0]), b[1])
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = b[0] + ": " + err.Error() + "\n" + string(out)
			}
		}()
	}
	wg.Wait()
	if e := strings.Join(errs, ""); e != "" {
		t.Fatalf("build: %s", e)
	}
	args := []string{"-smoke"}
	for _, b := range tools {
		if b[0] != "zbench" {
			args = append(args, "-"+b[0], filepath.Join(bin, b[0]))
		}
	}
	cmd := exec.Command(filepath.Join(bin, "zbench"), args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("zbench -smoke: %v\n%s", err, out)
	}
	// Every peer config that can run here must have run.
	for _, want := range []string{
		"handshake-ecdsa/nginx", "handshake-rsa/haproxy", "handshake-rsa/ztgate go", "handshake-rsa/ztgate openssl", "proxy-h1/ztgate", "proxy-h2/caddy",
		"jwt-h1/haproxy jwt", "h3/caddy", "h3/ztgate",
		"egress-conn/direct", "egress-conn/nginx", "egress-conn/haproxy", "egress-bulk/nginx", "egress-bulk/haproxy",
		"dns/coredns", "dns/dnsmasq", "dns-miss/coredns", "dns-miss/dnsmasq", "memory/ztgate", "memory/nginx", "memory/haproxy", "memory/caddy", "reload/ztgate",
	} {
		if !strings.Contains(string(out), " "+want) {
			t.Errorf("smoke output lacks %s", want)
		}
	}
	// ztgate's scenarios either ran or say why not.
	for _, sc := range []string{"jwt-h1/ztgate jwt nocache", "jwt-h1/ztgate chain", "egress-conn/ztgate", "dns/ztgate detect", "dns/ztgate nodetect", "dns-miss/ztgate detect"} {
		if !strings.Contains(string(out), " "+sc) && !strings.Contains(string(out), sc+": not available in this build") {
			t.Errorf("smoke output says nothing of %s", sc)
		}
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "zbench smoke:") {
			t.Log(l)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}
