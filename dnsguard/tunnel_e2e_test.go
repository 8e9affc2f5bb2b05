package dnsguard

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ztgate/ztgate/e2e/testenv"
)

// The real-tunnel tests run Debian's iodine and dns2tcp through dnsguard
// on loopback, as ../shared/testdata/README.md ("dns/") describes. Both
// clients only speak to port 53, so dnsguard listens on port 53 of a
// random 127/8 address (root needed). Every process has a deadline and
// is stopped by its own PID.

const tunnelPayload = 64 << 10 // the bounded payload pushed through each tunnel

// countingRelay sits between dnsguard and a tunnel server and counts the
// queries and query-name bytes that reach the authoritative side.
type countingRelay struct {
	pc        net.PacketConn
	target    *net.UDPAddr
	queries   atomic.Int64
	nameBytes atomic.Int64
}

func startRelay(t *testing.T, listen, target string) *countingRelay {
	t.Helper()
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		t.Fatal(err)
	}
	ta, _ := net.ResolveUDPAddr("udp", target)
	r := &countingRelay{pc: pc, target: ta}
	go r.run()
	t.Cleanup(func() { pc.Close() })
	return r
}

func (r *countingRelay) run() {
	buf := make([]byte, 65535)
	for {
		n, from, err := r.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var m dns.Msg
		if err := m.Unpack(buf[:n]); err == nil && len(m.Question) == 1 {
			r.queries.Add(1)
			r.nameBytes.Add(int64(len(m.Question[0].Name)))
		}
		pkt := append([]byte(nil), buf[:n]...)
		go func() { // one upstream socket per query, like a resolver
			c, err := net.DialUDP("udp", nil, r.target)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write(pkt)
			rb := make([]byte, 65535)
			if n, err := c.Read(rb); err == nil {
				r.pc.WriteTo(rb[:n], from)
			}
		}()
	}
}

type proc struct {
	cmd *exec.Cmd
	out *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// start runs a bounded process; Cleanup kills it by PID.
func start(t *testing.T, limit time.Duration, name string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	cmd := exec.CommandContext(ctx, name, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("%s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		cancel()
	})
	return &proc{cmd: cmd, out: out}
}

// waitFor polls an external process's output: there is no signal to
// wait on but its log. Bounded by limit.
func waitFor(p *proc, want string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if strings.Contains(p.out.String(), want) {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func randOctet() byte {
	n, _ := rand.Int(rand.Reader, big.NewInt(200))
	return byte(n.Int64() + 20)
}

func needTunnelTools(t *testing.T) {
	t.Helper()
	if !testenv.Root() {
		testenv.Missing(t, "the real-tunnel tests need root (port 53, tun devices, network namespaces)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testenv.Missing(t, "no /dev/net/tun: iodine cannot run")
	}
	for _, tool := range []string{"iodine", "iodined", "dns2tcpc", "dns2tcpd", "curl", "python3", "ip"} {
		testenv.Tool(t, tool)
	}
}

// tunnelEnv is one dnsguard on <ip>:53 forwarding t.test and t2.test to
// counting relays in front of iodined and dns2tcpd.
type tunnelEnv struct {
	ip           string // dnsguard's address
	srv          *Server
	iodRelay     *countingRelay
	d2Relay      *countingRelay
	iodinedAddr  string
	dns2tcpdAddr string
	tag          string
	dir          string
	blob         []byte
	httpPort     int
}

func newTunnelEnv(t *testing.T, tunneling string) *tunnelEnv {
	t.Helper()
	a, b := randOctet(), randOctet()
	e := &tunnelEnv{ip: fmt.Sprintf("127.53.%d.%d", a, b), tag: fmt.Sprintf("%d%d", a, b), dir: t.TempDir()}
	e.iodinedAddr = fmt.Sprintf("127.54.%d.%d:5300", a, b)
	e.dns2tcpdAddr = fmt.Sprintf("127.54.%d.%d:5301", a, b)
	e.iodRelay = startRelay(t, fmt.Sprintf("127.55.%d.%d:0", a, b), e.iodinedAddr)
	e.d2Relay = startRelay(t, fmt.Sprintf("127.55.%d.%d:0", a, b), e.dns2tcpdAddr)
	cfg := fmt.Sprintf(`dns:
  listen: ["%s:53"]
  upstreams:
    - {address: "%s", zones: [t.test]}
    - {address: "%s", zones: [t2.test]}
    - {address: "127.0.0.1:9"}
%s`, e.ip, e.iodRelay.pc.LocalAddr(), e.d2Relay.pc.LocalAddr(), tunneling)
	s, err := New(parseCfg(t, cfg), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	e.srv = s
	raw := make([]byte, tunnelPayload*3/4)
	rand.Read(raw)
	e.blob = []byte(base64.StdEncoding.EncodeToString(raw)) // 64 KiB of text
	if err := os.WriteFile(filepath.Join(e.dir, "blob.txt"), e.blob, 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

func freePort(t *testing.T, ip string) int {
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// fetch downloads the blob through the tunnel with curl; true if complete.
func (e *tunnelEnv) fetch(t *testing.T, url string, limit time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), limit+5*time.Second)
	defer cancel()
	got := filepath.Join(e.dir, "got.txt")
	os.Remove(got)
	exec.CommandContext(ctx, "curl", "-s", "--max-time", fmt.Sprint(int(limit.Seconds())), "-o", got, url).Run()
	b, err := os.ReadFile(got)
	return err == nil && bytes.Equal(b, e.blob)
}

const detectionOff = "  tunneling: {mode: off, refuse_types: [none]}\n  rate_limit: {qps: -1}\n"

func TestRealIodine(t *testing.T) {
	t.Parallel()
	needTunnelTools(t)
	for _, c := range []struct {
		name, tunneling string
		wantWork        bool
	}{
		{"detection-off", detectionOff, true},
		{"detection-on", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newTunnelEnv(t, c.tunneling)
			srvDev, cliDev, ns := "izs"+e.tag, "izc"+e.tag, "izns"+e.tag
			net3 := fmt.Sprintf("10.%d.%d", 100+int(e.tag[0]-'0'), int(e.tag[1]-'0')*20)
			iodHost, iodPort, _ := net.SplitHostPort(e.iodinedAddr)
			iodined := start(t, 90*time.Second, "iodined", "-f", "-c", "-d", srvDev, "-l", iodHost, "-p", iodPort,
				"-P", "testpass123", net3+".1/27", "t.test")
			if !waitFor(iodined, "Listening to dns", 10*time.Second) {
				t.Fatalf("iodined did not start:\n%s", iodined.out)
			}
			iodine := start(t, 60*time.Second, "iodine", "-f", "-r", "-d", cliDev, "-P", "testpass123", e.ip, "t.test")
			// iodine sets up in about 2 s here; when blocked it retries until killed.
			setup := 20 * time.Second
			if !c.wantWork {
				setup = 8 * time.Second
			}
			up := waitFor(iodine, "Connection setup complete", setup)
			worked := false
			if up {
				// Move the server's tun into its own netns so the data
				// really crosses the tunnel (see the README recipe).
				exec.Command("ip", "netns", "add", ns).Run()
				t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
				for _, args := range [][]string{
					{"link", "set", srvDev, "netns", ns},
					{"netns", "exec", ns, "ip", "addr", "add", net3 + ".1/27", "dev", srvDev},
					{"netns", "exec", ns, "ip", "link", "set", srvDev, "up"},
				} {
					if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
						t.Fatalf("ip %v: %v %s", args, err, out)
					}
				}
				httpd := start(t, 90*time.Second, "ip", "netns", "exec", ns, "python3", "-m", "http.server", "8000",
					"--bind", net3+".1", "--directory", e.dir)
				if !waitFor(httpd, "Serving HTTP", 10*time.Second) {
					t.Fatalf("http server in netns did not start: %s", httpd.out)
				}
				worked = e.fetch(t, "http://"+net3+".1:8000/blob.txt", 30*time.Second)
			}
			leaked := e.iodRelay.nameBytes.Load()
			rep := e.srv.Report()
			t.Logf("iodine %s: handshake=%v, 64 KiB transfer=%v, %d queries / %d name bytes reached iodined, alerts=%d",
				c.name, up, worked, e.iodRelay.queries.Load(), leaked, len(rep.Alerts))
			if len(rep.Alerts) > 0 {
				t.Logf("alert: %s", alertJSON(rep.Alerts[0]))
			}
			if c.wantWork {
				if !up || !worked {
					t.Fatalf("with detection off the tunnel must work (proves the test is real): handshake=%v transfer=%v\niodine:\n%s",
						up, worked, tail(iodine.out.String()))
				}
				return
			}
			if up || worked {
				t.Fatalf("tunnel not cut: handshake=%v transfer=%v", up, worked)
			}
			if leaked >= 4096 {
				t.Fatalf("%d name bytes reached the authoritative server before the block, want < 4096", leaked)
			}
			if len(rep.Alerts) == 0 || rep.Alerts[0].Domain != "t.test" {
				t.Fatalf("no alert for t.test: %+v", rep.Alerts)
			}
		})
	}
}

func TestRealDNS2TCP(t *testing.T) {
	t.Parallel()
	needTunnelTools(t)
	for _, c := range []struct {
		name, tunneling string
		wantWork        bool
	}{
		{"detection-off", detectionOff, true},
		{"detection-on", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newTunnelEnv(t, c.tunneling)
			webPort := freePort(t, "127.0.0.1")
			localPort := freePort(t, "127.0.0.1")
			web := start(t, 90*time.Second, "python3", "-m", "http.server", fmt.Sprint(webPort), "--bind", "127.0.0.1", "--directory", e.dir)
			if !waitFor(web, "Serving HTTP", 10*time.Second) {
				t.Fatalf("web server did not start: %s", web.out)
			}
			host, port, _ := net.SplitHostPort(e.dns2tcpdAddr)
			os.Mkdir(filepath.Join(e.dir, "chroot"), 0o755)
			conf := fmt.Sprintf("listen = %s\nport = %s\nuser = nobody\nchroot = %s\ndomain = t2.test\nkey = testkey\nresources = web:127.0.0.1:%d\n",
				host, port, filepath.Join(e.dir, "chroot"), webPort)
			confPath := filepath.Join(e.dir, "dns2tcpd.conf")
			os.WriteFile(confPath, []byte(conf), 0o644)
			os.Chmod(e.dir, 0o755)
			d2s := start(t, 90*time.Second, "dns2tcpd", "-F", "-d", "1", "-f", confPath)
			if !waitFor(d2s, "Change to user", 10*time.Second) {
				t.Fatalf("dns2tcpd did not start:\n%s", d2s.out)
			}
			d2c := start(t, 60*time.Second, "dns2tcpc", "-f", "/dev/null", "-z", "t2.test", "-k", "testkey", "-r", "web",
				"-l", fmt.Sprint(localPort), e.ip)
			listening := waitForTCP(fmt.Sprintf("127.0.0.1:%d", localPort), 10*time.Second)
			worked := listening && e.fetch(t, fmt.Sprintf("http://127.0.0.1:%d/blob.txt", localPort), 30*time.Second)
			leaked := e.d2Relay.nameBytes.Load()
			rep := e.srv.Report()
			t.Logf("dns2tcp %s: client listening=%v, 64 KiB transfer=%v, %d queries / %d name bytes reached dns2tcpd, alerts=%d",
				c.name, listening, worked, e.d2Relay.queries.Load(), leaked, len(rep.Alerts))
			if len(rep.Alerts) > 0 {
				t.Logf("alert: %s", alertJSON(rep.Alerts[0]))
			}
			if c.wantWork {
				if !worked {
					t.Fatalf("with detection off the tunnel must work: listening=%v\nclient:\n%s\nserver:\n%s", listening, tail(d2c.out.String()), tail(d2s.out.String()))
				}
				return
			}
			if worked {
				t.Fatalf("tunnel not cut: the 64 KiB payload arrived")
			}
			if leaked >= 4096 {
				t.Fatalf("%d name bytes reached the authoritative server before the block, want < 4096", leaked)
			}
			if len(rep.Alerts) == 0 || rep.Alerts[0].Domain != "t2.test" {
				t.Fatalf("no alert for t2.test: %+v", rep.Alerts)
			}
		})
	}
}

func waitForTCP(addr string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func alertJSON(a any) string {
	b, _ := json.Marshal(a)
	return string(b)
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}
