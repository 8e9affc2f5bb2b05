package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// checkAllowlist proves the proxy does the scenario's work: a name on
// the allowlist reaches the origin (GET / answers 200), one that is not
// (but resolves, and is in the origin's certificate) does not.
func checkAllowlist(r *runner, t *target) error {
	if t.variant == "transparent" {
		return checkTransparent(r, t)
	}
	// A few tries: a proxy may accept before its first dial can work.
	var err error
	for try := 0; try < 5; try++ {
		if err = tlsProbe(r.env.ca, t, egressName); err == nil {
			break
		}
		log.Printf("  %-22s allowlist check, try %d: %v", t.label(), try+1, err)
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("allowlist check: %s through %s: %w", egressName, t.label(), err)
	}
	if t.p.name == "direct" {
		return nil
	}
	if err := tlsProbe(r.env.ca, t, deniedName); err == nil {
		return fmt.Errorf("allowlist check: %s, not on the allowlist, reached the origin through %s", deniedName, t.label())
	}
	return nil
}

// tlsProbe makes one TLS connection to name through the target (CONNECT
// for ztgate) and one GET.
func tlsProbe(caFile string, t *target, name string) error {
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	raw, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", t.port), 3*time.Second)
	if err != nil {
		return err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	if t.p.name == "ztgate" {
		fmt.Fprintf(raw, "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", name, originPort, name, originPort)
		br := bufio.NewReader(raw)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("CONNECT: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("CONNECT answered %s", resp.Status)
		}
		if br.Buffered() > 0 {
			return fmt.Errorf("CONNECT: unexpected bytes after the answer")
		}
	}
	c := tls.Client(raw, &tls.Config{ServerName: name, RootCAs: roots, MinVersion: tls.VersionTLS13})
	if err := c.Handshake(); err != nil {
		return err
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", name)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("origin answered %s", resp.Status)
	}
	return nil
}

func yamlList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = `"` + n + `"`
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// The `transparent` row of egress-conn runs ztgate's transparent
// listener, which sees traffic as nginx ssl_preread and haproxy
// req.ssl_sni do: the client connects to the origin's own address and
// the proxy takes the connection over (nftables REDIRECT, then
// SO_ORIGINAL_DST), with no CONNECT round trip. REDIRECT must not touch
// the host's own rules, so that row runs in a network namespace zbench
// creates (and deletes when it stops): ztgate, a second origin and a
// second DNS stub (same configs, same CPUs as the shared ones), and the
// load generator. Only the load generator's connections are redirected:
// it runs with group nsClientGID, which the nftables rule matches, so
// the proxy's own dial to the origin goes straight through. From the
// host, the namespace's admin and listener ports are reached through
// two relays zbench opens on the same loopback ports while the row runs
// (the readiness checks and the CPU profile use them).

// nsClientGID is the load generator's group inside the namespace.
const nsClientGID = 4242

// egressNS is the namespace of the transparent row, made on first use.
type egressNS struct {
	name         string
	origin, stub *proc
	relays       []net.Listener
}

var transparentNS *egressNS

func isTransparent(sc scenario, t *target) bool {
	return sc.name == "egress-conn" && t.p.name == "ztgate" && t.variant == "transparent"
}

// netnsExec is the command prefix that runs the target's server inside
// the transparent row's namespace (nil for every other target).
func netnsExec(t *target) []string {
	if t.variant != "transparent" || transparentNS == nil {
		return nil
	}
	return []string{lookPath("ip"), "netns", "exec", transparentNS.name}
}

// prepareTransparent runs before every ztgate target starts: it closes
// the relays of an earlier transparent run (their ports are ztgate's),
// and for the transparent row makes the namespace (once) and opens the
// relays. A machine where that cannot be done gets a row that says why.
func prepareTransparent(r *runner, sc scenario, t *target) error {
	if ns := transparentNS; ns != nil {
		for _, l := range ns.relays {
			l.Close()
		}
		ns.relays = nil
	}
	if !isTransparent(sc, t) {
		return nil
	}
	if transparentNS == nil {
		ns, err := newEgressNS(r, t.port)
		if err != nil {
			return &notAvailable{"transparent mode needs a network namespace with nftables: " + err.Error()}
		}
		transparentNS = ns
	}
	ns := transparentNS
	for _, port := range []int{ztAdminPort, t.port} {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return fmt.Errorf("relay to the namespace: %w", err)
		}
		ns.relays = append(ns.relays, l)
		go relay(l, ns.name, port)
	}
	return nil
}

// newEgressNS creates the namespace: loopback up, the REDIRECT rule for
// the load generator's group, the origin and the DNS stub. A holder
// process deletes the namespace when the runner stops it (last, as it
// starts first).
func newEgressNS(r *runner, proxyPort int) (*egressNS, error) {
	ip, nft := lookPath("ip"), lookPath("nft")
	if ip == "" || nft == "" || lookPath("setpriv") == "" {
		return nil, fmt.Errorf("ip, nft and setpriv are required")
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("zbench does not run as root")
	}
	ns := &egressNS{name: fmt.Sprintf("zbench-eg%d", os.Getpid())}
	if _, err := r.spawn("egress-netns", "0", nil, "sh", "-c",
		fmt.Sprintf(`trap 'kill $! 2>/dev/null; %s netns del %s 2>/dev/null; exit 0' TERM INT; sleep 86400 & wait`, ip, ns.name)); err != nil {
		return nil, err
	}
	rules := filepath.Join(r.env.dir, "egress-netns.nft")
	err := os.WriteFile(rules, []byte(fmt.Sprintf(`table ip zbench_egress {
  chain output {
    type nat hook output priority -100; policy accept;
    meta skgid %d ip daddr 127.0.0.1 tcp dport %d redirect to :%d
  }
}
`, nsClientGID, originPort, proxyPort)), 0o644)
	if err != nil {
		return nil, err
	}
	for _, argv := range [][]string{
		{ip, "netns", "add", ns.name},
		{ip, "-n", ns.name, "link", "set", "lo", "up"},
		{ip, "netns", "exec", ns.name, nft, "-f", rules},
	} {
		if out, err := exec.CommandContext(r.ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%s: %v: %s", strings.Join(argv[1:], " "), err, strings.TrimSpace(string(out)))
		}
	}
	conf, err := writeNSOrigin(r)
	if err != nil {
		return nil, err
	}
	if ns.origin, err = r.spawn("egress-ns-origin", "0", nil, ip, "netns", "exec", ns.name, lookPath("nginx"), "-p", r.env.dir, "-c", conf); err != nil {
		return nil, err
	}
	if ns.stub, err = r.spawn("egress-ns-dnsstub", "0", nil, ip, "netns", "exec", ns.name, abs(r.o.dnsstub),
		"-addr", fmt.Sprintf("127.0.0.1:%d", stubPort), "-names", filepath.Join(r.env.dir, "zone.txt")); err != nil {
		return nil, err
	}
	for _, port := range []int{originPort, stubPort} {
		if err := nsWaitPort(r.ctx, ns.name, port, 10*time.Second); err != nil {
			return nil, fmt.Errorf("inside the namespace: %w\n%s%s", err, ns.origin.output(), ns.stub.output())
		}
	}
	log.Printf("  egress-conn: network namespace %s for the transparent row (origin and DNS stub inside, nftables REDIRECT of group %d)", ns.name, nsClientGID)
	return ns, nil
}

// writeNSOrigin writes the origin's nginx config for the namespace: the
// shared origin's, with its own pid and log files.
func writeNSOrigin(r *runner) (string, error) { return writeOriginConf(r.env, "origin-netns") }

// dialNS connects to 127.0.0.1:port inside the namespace: the socket is
// made on a thread that entered it (and that thread ends with the
// goroutine, so no other goroutine runs in the namespace).
func dialNS(ns string, port int, timeout time.Duration) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			ch <- res{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{nil, fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), timeout)
		ch <- res{c, err}
	}()
	x := <-ch
	return x.c, x.err
}

func nsWaitPort(ctx context.Context, ns string, port int, max time.Duration) error {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c, err := dialNS(ns, port, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("port %d not open after %s", port, max)
}

// relay forwards the host's 127.0.0.1:port into the namespace's, until l
// is closed.
func relay(l net.Listener, ns string, port int) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			up, err := dialNS(ns, port, time.Second)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{})
			go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); close(done) }()
			io.Copy(c, up)
			c.(*net.TCPConn).CloseWrite()
			<-done
		}()
	}
}

// checkTransparent proves the transparent row does the scenario's work:
// inside the namespace, a connection from the load generator's group to
// the origin's address reaches the origin for the allowlisted name and
// is dropped for another one (which the origin itself would serve).
func checkTransparent(r *runner, t *target) error {
	ns := transparentNS
	for _, port := range []int{ztAdminPort, t.port} {
		if err := nsWaitPort(r.ctx, ns.name, port, 10*time.Second); err != nil {
			return &notAvailable{fmt.Sprintf("the config validates but nothing listens on %d in the namespace (transparent mode not wired into cmd/ztgate?)", port)}
		}
	}
	probe := func(name string) (string, error) {
		out, err := exec.CommandContext(r.ctx, lookPath("ip"), "netns", "exec", ns.name, "setpriv", fmt.Sprintf("--regid=%d", nsClientGID), "--clear-groups",
			"curl", "-sS", "--max-time", "5", "--cacert", r.env.ca, "--resolve", fmt.Sprintf("%s:%d:127.0.0.1", name, originPort),
			"-o", "/dev/null", "-w", "%{http_code}", fmt.Sprintf("https://%s:%d/", name, originPort)).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	var out string
	var err error
	for try := 0; try < 5; try++ {
		if out, err = probe(egressName); err == nil && out == "200" {
			break
		}
		log.Printf("  %-22s allowlist check, try %d: %v %s", t.label(), try+1, err, out)
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil || out != "200" {
		return fmt.Errorf("allowlist check: %s through %s: %v %s", egressName, t.label(), err, out)
	}
	if out, err := probe(deniedName); err == nil {
		return fmt.Errorf("allowlist check: %s, not on the allowlist, reached the origin through %s (HTTP %s): is the connection redirected?", deniedName, t.label(), out)
	}
	return nil
}

// transparentLoad runs hsload inside the namespace, in the group whose
// connections to the origin are redirected to the proxy. The namespace's
// origin and DNS stub are helpers on CPU 0 that the runner does not know
// about; their CPU is added to the client's, so it is not counted as
// foreign.
func transparentLoad(r *runner, d time.Duration) (string, error) {
	ns := transparentNS
	o0, _ := ns.origin.cpu()
	s0, _ := ns.stub.cpu()
	out, err := r.client(lookPath("ip"), "netns", "exec", ns.name, "setpriv", fmt.Sprintf("--regid=%d", nsClientGID), "--clear-groups",
		abs(r.o.hsload), "-addr", fmt.Sprintf("127.0.0.1:%d", originPort), "-sni", egressName, "-ca", r.env.ca, "-c", r.conc(50, 4), "-d", d.String())
	o1, _ := ns.origin.cpu()
	s1, _ := ns.stub.cpu()
	r.clientCPU += (o1 - o0) + (s1 - s0)
	return out, err
}
