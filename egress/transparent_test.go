package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/e2e/testenv"
)

// helperEnv makes the test binary run as the transparent-mode helper: the
// proxy, its DNS server and a TLS origin, inside the gateway namespace.
const helperEnv = "EGRESS_TEST_NETNS_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		if err := runHelper(dir); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runHelper runs inside `ip netns exec <gw>`: a DNS server on
// 127.0.0.1:5353, a TLS origin on 10.77.0.1:443 and the proxy, with JSON
// logs on stdout. It prints READY on stderr and exits when stdin closes.
func runHelper(dir string) error {
	mux := dns.NewServeMux()
	table := map[string]string{"origin.test.": "10.77.0.1", "denied.test.": "10.77.0.1", "elsewhere.test.": "10.77.0.9", "origin6.test.": "fd77::1"}
	mux.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		a, ok := table[strings.ToLower(q.Question[0].Name)]
		ip := net.ParseIP(a)
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Question[0].Qtype == dns.TypeA && ip.To4() != nil:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: ip})
		case q.Question[0].Qtype == dns.TypeAAAA && ip.To4() == nil:
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60}, AAAA: ip})
		}
		w.WriteMsg(m)
	})
	started := make(chan struct{})
	ds := &dns.Server{Addr: "127.0.0.1:5353", Net: "udp", Handler: mux, NotifyStartedFunc: func() { close(started) }}
	go ds.ListenAndServe()
	<-started

	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "origin.pem"), filepath.Join(dir, "origin.key"))
	if err != nil {
		return err
	}
	for _, addr := range []string{"10.77.0.1:443", "[fd77::1]:443"} {
		ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}})
		if err != nil {
			return err
		}
		go (&http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s", r.TLS.ServerName)
		})}).Serve(ln)
	}

	data, err := os.ReadFile(filepath.Join(dir, "config.yaml"))
	if err != nil {
		return err
	}
	cfg, err := configs.Parse("config.yaml", data, nil)
	if err != nil {
		return err
	}
	p, err := New(cfg, Deps{Logger: slog.New(slog.NewJSONHandler(os.Stdout, nil)), Metrics: prometheus.NewRegistry()})
	if err != nil {
		return err
	}
	if err := p.Start(); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "READY")
	io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.Shutdown(ctx)
}

// run runs a command and fails the test on error.
func run(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestTransparentNetns intercepts a client's TLS connections with an
// nftables REDIRECT in a gateway namespace the test creates:
//
//	[client ns] 10.77.0.2 ──veth── 10.77.0.1 [gateway ns: nft redirect :443 → proxy :3129, origin 10.77.0.1:443]
func TestTransparentNetns(t *testing.T) {
	if !testenv.Root() {
		testenv.Missing(t, "transparent mode test needs root to create network namespaces (ip netns)")
	}
	ip := testenv.Tool(t, "ip")
	nft := testenv.Tool(t, "nft")
	curl := testenv.Tool(t, "curl")
	suffix := fmt.Sprint(os.Getpid() % 100000)
	gw, cl := "ztgeg-gw"+suffix, "ztgeg-cl"+suffix
	vgw, vcl := "ztgw"+suffix, "ztcl"+suffix
	if out, err := exec.Command(ip, "netns", "add", gw).CombinedOutput(); err != nil {
		testenv.Missing(t, fmt.Sprintf("network namespaces unavailable (ip netns add: %v: %s)", err, strings.TrimSpace(string(out))))
	}
	t.Cleanup(func() { exec.Command(ip, "netns", "del", gw).Run() })
	run(t, ip, "netns", "add", cl)
	t.Cleanup(func() { exec.Command(ip, "netns", "del", cl).Run() })
	run(t, ip, "link", "add", vgw, "netns", gw, "type", "veth", "peer", "name", vcl, "netns", cl)
	run(t, ip, "-n", gw, "addr", "add", "10.77.0.1/24", "dev", vgw)
	run(t, ip, "-n", cl, "addr", "add", "10.77.0.2/24", "dev", vcl)
	run(t, ip, "-n", gw, "addr", "add", "fd77::1/64", "dev", vgw, "nodad")
	run(t, ip, "-n", cl, "addr", "add", "fd77::2/64", "dev", vcl, "nodad")
	for _, ns := range []string{gw, cl} {
		run(t, ip, "-n", ns, "link", "set", "lo", "up")
	}
	run(t, ip, "-n", gw, "link", "set", vgw, "up")
	run(t, ip, "-n", cl, "link", "set", vcl, "up")

	// The rules shipped in packaging/nftables-egress.nft, with the test's
	// interface and port.
	rules := fmt.Sprintf(`table inet ztgate_egress {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname %q tcp dport 443 redirect to :3129
  }
}
`, vgw)
	rf := filepath.Join(t.TempDir(), "rules.nft")
	os.WriteFile(rf, []byte(rules), 0o600)
	run(t, ip, "netns", "exec", gw, nft, "-f", rf)

	pk := newPKI(t, "origin.test", "denied.test", "elsewhere.test", "origin6.test")
	dir := t.TempDir()
	pk.writePair(t, "origin", pk.tlsCert)
	for _, f := range []string{"origin.pem", "origin.key"} {
		b, _ := os.ReadFile(filepath.Join(pk.dir, f))
		os.WriteFile(filepath.Join(dir, f), b, 0o600)
	}
	os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(`
egress:
  listeners:
    - {name: transparent, mode: transparent, address: ":3129"}
  resolver: {address: "127.0.0.1:5353"}
  groups:
    - {name: clients, cidrs: [10.77.0.0/24, "fd77::/64"]}
  rules:
    - name: origin
      from: [clients]
      sni: [origin.test, origin6.test, elsewhere.test]
      cidrs: [10.77.0.0/24, "fd77::/64"]
`), 0o600)

	exe, _ := os.Executable()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	helper := exec.CommandContext(ctx, ip, "netns", "exec", gw, exe, "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+"="+dir)
	stdin, _ := helper.StdinPipe()
	stdout, _ := helper.StdoutPipe()
	stderr, _ := helper.StderrPipe()
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		helper.Wait()
	})
	rec := newRecorder()
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			lr := logRec{attrs: map[string]string{}}
			for k, v := range m {
				if k == "msg" {
					lr.msg = fmt.Sprint(v)
				}
				lr.attrs[k] = fmt.Sprint(v)
			}
			rec.mu.Lock()
			rec.recs = append(rec.recs, lr)
			rec.cond.Broadcast()
			rec.mu.Unlock()
		}
	}()
	sc := bufio.NewScanner(stderr)
	ready := false
	for sc.Scan() {
		if sc.Text() == "READY" {
			ready = true
			break
		}
		t.Log("helper:", sc.Text())
	}
	if !ready {
		t.Fatal("helper exited before READY")
	}
	go io.Copy(io.Discard, stderr)

	curlIn := func(args ...string) (string, error) {
		c := exec.CommandContext(ctx, ip, append([]string{"netns", "exec", cl, curl, "-sS", "--max-time", "10", "--cacert", pk.caFile}, args...)...)
		c.Env = cleanEnv()
		out, err := c.CombinedOutput()
		return string(out), err
	}
	t.Run("allowlisted SNI", func(t *testing.T) {
		out, err := curlIn("--resolve", "origin.test:443:10.77.0.1", "https://origin.test/")
		if err != nil || out != "hello from origin.test" {
			t.Fatalf("curl: %v: %s", err, out)
		}
		r := rec.wait(t, MsgClose, map[string]string{FieldDecision: "allow", FieldSNI: "origin.test", FieldMode: "transparent"})
		if r.attrs[FieldDialled] != "10.77.0.1:443" || r.attrs[FieldHost] != "10.77.0.1" {
			t.Fatalf("record: %v", r.attrs)
		}
	})
	t.Run("allowlisted SNI over IPv6", func(t *testing.T) {
		out, err := curlIn("-6", "--resolve", "origin6.test:443:[fd77::1]", "https://origin6.test/")
		if err != nil || out != "hello from origin6.test" {
			t.Fatalf("curl: %v: %s", err, out)
		}
		r := rec.wait(t, MsgClose, map[string]string{FieldDecision: "allow", FieldSNI: "origin6.test"})
		if r.attrs[FieldDialled] != "[fd77::1]:443" || r.attrs[FieldSource] == "" {
			t.Fatalf("record: %v", r.attrs)
		}
	})
	t.Run("not allowlisted SNI", func(t *testing.T) {
		if out, err := curlIn("--resolve", "denied.test:443:10.77.0.1", "https://denied.test/"); err == nil {
			t.Fatalf("curl succeeded: %s", out)
		}
		rec.wait(t, MsgDecision, map[string]string{FieldDecision: "deny", FieldSNI: "denied.test", FieldReason: "not_allowlisted"})
	})
	t.Run("SNI whose name resolves elsewhere", func(t *testing.T) {
		if out, err := curlIn("-k", "--resolve", "elsewhere.test:443:10.77.0.1", "https://elsewhere.test/"); err == nil {
			t.Fatalf("curl succeeded: %s", out)
		}
		rec.wait(t, MsgDecision, map[string]string{FieldDecision: "deny", FieldSNI: "elsewhere.test", FieldReason: "dns_mismatch", FieldResolved: "10.77.0.9"})
	})
	t.Run("connection straight to the proxy port", func(t *testing.T) {
		if out, err := curlIn("--resolve", "origin.test:3129:10.77.0.1", "https://origin.test:3129/"); err == nil {
			t.Fatalf("curl succeeded: %s", out)
		}
		rec.wait(t, MsgDecision, map[string]string{FieldReason: "no_original_destination"})
	})
}
