// Package e2e runs the real ztgate binary against real clients (curl,
// h2load, openssl s_client, quic-go's HTTP/3 client) on loopback.
package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/ztgate/ztgate/e2e/testenv"
)

var ztgateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ztgate-e2e-")
	if err != nil {
		panic(err)
	}
	ztgateBin = filepath.Join(dir, "ztgate")
	args := []string{"build", "-o", ztgateBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/ztgate/ztgate/cmd/ztgate")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building ztgate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// gw is one running ztgate process.
type gw struct {
	t      *testing.T
	dir    string
	conf   string
	cmd    *exec.Cmd
	port   int
	admin  int
	logs   *lockedBuf
	exited chan error
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// freePort returns a port free for TCP and UDP on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		l.Close()
		if err == nil {
			u.Close()
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

// startGW writes the config produced by conf(port, adminPort, dir) and
// starts ztgate on it, returning once /readyz answers 200.
func startGW(t *testing.T, conf func(g *gw) string) *gw {
	t.Helper()
	g := &gw{t: t, dir: t.TempDir(), port: freePort(t), admin: freePort(t), logs: &lockedBuf{}, exited: make(chan error, 1)}
	g.conf = filepath.Join(g.dir, "ztgate.yaml")
	g.write(conf(g))
	g.cmd = exec.Command(ztgateBin, "run", "-c", g.conf)
	g.cmd.Stdout, g.cmd.Stderr = g.logs, g.logs
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.exited <- g.cmd.Wait() }()
	t.Cleanup(func() {
		if g.cmd.ProcessState == nil {
			g.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-g.exited:
			case <-time.After(15 * time.Second):
				g.cmd.Process.Kill()
				<-g.exited
			}
		}
		if t.Failed() {
			lines := strings.Split(g.logs.String(), "\n")
			t.Logf("ztgate logs (last 60 lines):\n%s", strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
	g.waitReady()
	return g
}

func (g *gw) write(conf string) {
	g.t.Helper()
	tmp := g.conf + ".tmp"
	if err := os.WriteFile(tmp, []byte(conf), 0o644); err != nil {
		g.t.Fatal(err)
	}
	if err := os.Rename(tmp, g.conf); err != nil {
		g.t.Fatal(err)
	}
}

// waitLog waits (up to 10 s) until the gateway's log matches re. Log
// lines are written after the response reaches the client (the access
// log, the egress close record), so a check right after a request races
// with the writer.
func (g *gw) waitLog(re string) bool {
	rx := regexp.MustCompile(re)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if rx.MatchString(g.logs.String()) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (g *gw) adminURL(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", g.admin, path) }
func (g *gw) url(path string) string      { return fmt.Sprintf("https://localhost:%d%s", g.port, path) }
func (g *gw) caFile() string              { return filepath.Join(g.dir, "state", "ca", "root.pem") }

func (g *gw) waitReady() {
	g.t.Helper()
	for i := 0; i < 300; i++ {
		select {
		case err := <-g.exited:
			g.t.Fatalf("ztgate exited during start: %v\n%s", err, g.logs.String())
		default:
		}
		resp, err := http.Get(g.adminURL("/readyz"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	g.t.Fatalf("ztgate not ready after 15s\n%s", g.logs.String())
}

// metric returns the value of the first sample whose line starts with
// prefix (name plus labels), or -1.
func (g *gw) metric(prefix string) float64 {
	resp, err := http.Get(g.adminURL("/metrics"))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, prefix+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, prefix)), 64)
			return v
		}
	}
	return -1
}

// reload sends SIGHUP and waits until the reload counter for result
// moves.
func (g *gw) reload(result string) {
	g.t.Helper()
	key := fmt.Sprintf(`ztgate_config_reload_total{result="%s"}`, result)
	before := g.metric(key)
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		g.t.Fatal(err)
	}
	for i := 0; i < 500; i++ {
		if g.metric(key) > before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.t.Fatalf("no reload %s counted after SIGHUP", result)
}

func (g *gw) client() *http.Client {
	pem, err := os.ReadFile(g.caFile())
	if err != nil {
		g.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 32}
	g.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// echoUpstream is a plain-HTTP upstream that reports what it received.
func echoUpstream(t *testing.T) (addr string, hold chan struct{}, held chan struct{}) {
	t.Helper()
	hold, held = make(chan struct{}), make(chan struct{}, 16)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the whole request body first, as most services do: the
		// gateway's stream stays open until the client has sent it.
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		if r.URL.Path == "/slow" {
			held <- struct{}{}
			<-hold
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"path": r.URL.Path, "method": r.Method, "host": r.Host,
			"xff": r.Header.Get("X-Forwarded-For"), "proto": r.Header.Get("X-Forwarded-Proto"),
			"xfh": r.Header.Get("X-Forwarded-Host"), "rid": r.Header.Get("X-Request-Id"),
			"connection": r.Header.Get("Connection"), "te": r.Header.Get("X-Test"),
		})
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), hold, held
}

func baseConfig(upstreamAddr, body string) func(g *gw) string {
	return func(g *gw) string {
		return fmt.Sprintf(`
storage: %s/state
log: { level: info }
admin: { address: "127.0.0.1:%d" }
shutdown_timeout: 20s
listeners:
  - name: public
    address: "127.0.0.1:%d"
    protocols: [h1, h2, h3]
    tls: { names: [localhost, 127.0.0.1] }
upstreams:
  - name: echo
    endpoints: ["%s"]
routes:
  - name: api
    match: { hosts: [localhost], path_prefix: /api/ }
    upstream: echo
  - name: slow
    match: { path: /slow }
    upstream: echo
    timeout: 60s
  - name: blocked
    match: { hosts: [localhost], path_prefix: /api/admin, methods: [POST, DELETE] }
    direct_response: { status: 403, body: "blocked\n" }
  - name: default
    direct_response: { status: 200, body: "%s" }
`, g.dir, g.admin, g.port, upstreamAddr, body)
	}
}

func TestCurlH1H2AndForwardedHeaders(t *testing.T) {
	curl := testenv.Tool(t, "curl")
	up, _, _ := echoUpstream(t)
	g := startGW(t, baseConfig(up, "hello"))
	for _, flag := range []string{"--http1.1", "--http2"} {
		t.Run(flag, func(t *testing.T) {
			out, err := exec.Command(curl, "-sS", flag, "--cacert", g.caFile(), "-w", "\n%{http_version} %{http_code}",
				"-H", "X-Forwarded-For: 6.6.6.6", "-H", "X-Request-Id: spoofed", g.url("/api/items?x=1")).CombinedOutput()
			if err != nil {
				t.Fatalf("curl: %v\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			status := lines[len(lines)-1]
			want := map[string]string{"--http1.1": "1.1 200", "--http2": "2 200"}[flag]
			if status != want {
				t.Fatalf("status line %q, want %q", status, want)
			}
			var got map[string]string
			if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
				t.Fatalf("upstream answer %q: %v", lines[0], err)
			}
			// The client is not a trusted proxy: its X-Forwarded-For
			// and X-Request-Id are replaced, not believed.
			if got["xff"] != "127.0.0.1" || got["proto"] != "https" || !strings.HasPrefix(got["xfh"], "localhost") {
				t.Fatalf("forwarded headers at the upstream: %+v", got)
			}
			if got["rid"] == "spoofed" || len(got["rid"]) != 36 {
				t.Fatalf("upstream X-Request-Id %q", got["rid"])
			}
			if got["path"] != "/api/items" {
				t.Fatalf("upstream path %q", got["path"])
			}
		})
	}
	// Routing by method: POST /api/admin is blocked, GET goes through.
	c := g.client()
	resp, err := c.Post(g.url("/api/admin/x"), "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || string(b) != "blocked\n" {
		t.Fatalf("POST /api/admin: %d %q", resp.StatusCode, b)
	}
	resp, err = c.Get(g.url("/api/admin/x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/admin: %d", resp.StatusCode)
	}
	// The access log records the request with its route and upstream.
	if !g.waitLog(`"route":"api".*"upstream":"echo"`) {
		t.Fatalf("no access log line for route api")
	}
}

func TestHTTP3WithQuicGo(t *testing.T) {
	up, _, _ := echoUpstream(t)
	g := startGW(t, baseConfig(up, "over h3"))
	pem, _ := os.ReadFile(g.caFile())
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.Close()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for _, path := range []string{"/", "/api/h3"} {
		resp, err := c.Get(g.url(path))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 3 || resp.StatusCode != 200 {
			t.Fatalf("%s: %s %d %q", path, resp.Proto, resp.StatusCode, b)
		}
		if path == "/" && string(b) != "over h3" {
			t.Fatalf("body %q", b)
		}
	}
}

func TestOpenSSLAndH2Load(t *testing.T) {
	openssl := testenv.Tool(t, "openssl")
	h2load := testenv.Tool(t, "h2load")
	up, _, _ := echoUpstream(t)
	g := startGW(t, baseConfig(up, "ok"))
	// TLS 1.3 with h2 negotiated, and the chain verifies against the
	// local CA.
	cmd := exec.Command(openssl, "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", g.port), "-servername", "localhost",
		"-alpn", "h2", "-CAfile", g.caFile(), "-verify_return_error")
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "New, TLSv1.3") || !strings.Contains(string(out), "ALPN protocol: h2") ||
		!strings.Contains(string(out), "Verify return code: 0 (ok)") {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	// TLS 1.1 is refused.
	cmd = exec.Command(openssl, "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", g.port), "-tls1_1", "-brief")
	cmd.Stdin = strings.NewReader("")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("TLS 1.1 accepted:\n%s", out)
	}
	// A bounded h2load run: every request succeeds.
	out, err = exec.Command(h2load, "-n", "2000", "-c", "4", "-m", "8", fmt.Sprintf("https://127.0.0.1:%d/api/load", g.port)).CombinedOutput()
	if err != nil {
		t.Fatalf("h2load: %v\n%s", err, out)
	}
	done, ok := h2loadCounts(string(out))
	if !ok || done.succeeded != 2000 || done.failed != 0 || done.errored != 0 {
		t.Fatalf("h2load: %+v\n%s", done, out)
	}
}

type h2counts struct{ total, succeeded, failed, errored int }

var h2re = regexp.MustCompile(`requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored`)

func h2loadCounts(out string) (h2counts, bool) {
	m := h2re.FindStringSubmatch(out)
	if m == nil {
		return h2counts{}, false
	}
	a, _ := strconv.Atoi(m[1])
	b, _ := strconv.Atoi(m[2])
	c, _ := strconv.Atoi(m[3])
	d, _ := strconv.Atoi(m[4])
	return h2counts{a, b, c, d}, true
}

// TestReloadUnderLoadWithSIGHUP: 20 SIGHUPs alternating two configs while
// h2load and a Go HTTP/1.1 client send a bounded load: zero failures.
// Then a broken file is refused and the old config keeps serving.
func TestReloadUnderLoadWithSIGHUP(t *testing.T) {
	h2load := testenv.Tool(t, "h2load")
	up, _, _ := echoUpstream(t)
	confA, confB := baseConfig(up, "A"), baseConfig(up, "B")
	g := startGW(t, confA)

	var wg sync.WaitGroup
	var h2out []byte
	var h2err error
	wg.Add(1)
	go func() {
		defer wg.Done()
		h2out, h2err = exec.Command(h2load, "-n", "6000", "-c", "8", "-m", "4",
			fmt.Sprintf("https://127.0.0.1:%d/api/reload", g.port)).CombinedOutput()
	}()
	var goFail atomic.Int64
	var firstErr atomic.Value
	c := g.client()
	tr := c.Transport.(*http.Transport)
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1
	tr.ForceAttemptHTTP2 = false
	reloading := make(chan struct{})
	reloadsDone := make(chan struct{})
	var during, total atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Bounded: until the reloads are over, at most 5000 requests.
			for i := 0; i < 5000; i++ {
				select {
				case <-reloadsDone:
					return
				default:
				}
				total.Add(1)
				resp, err := c.Get(g.url("/"))
				if err != nil {
					goFail.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || (string(b) != "A" && string(b) != "B") {
					goFail.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %q", resp.StatusCode, b))
				}
				select {
				case <-reloading:
					during.Add(1)
				default:
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		if i == 1 {
			close(reloading)
		}
		if i%2 == 0 {
			g.write(confB(g))
		} else {
			g.write(confA(g))
		}
		g.reload("success")
	}
	close(reloadsDone)
	wg.Wait()
	if during.Load() == 0 {
		t.Fatal("no request completed while the reloads ran: the test did not overlap load and reloads")
	}
	if h2err != nil {
		t.Fatalf("h2load: %v\n%s", h2err, h2out)
	}
	counts, ok := h2loadCounts(string(h2out))
	if !ok || counts.succeeded != 6000 || counts.failed != 0 || counts.errored != 0 {
		t.Fatalf("h2load during reloads: %+v\n%s", counts, h2out)
	}
	if n := goFail.Load(); n != 0 {
		t.Fatalf("%d HTTP/1.1 requests failed during reloads; first: %v", n, firstErr.Load())
	}
	t.Logf("20 reloads under load: h2load %d/%d succeeded; HTTP/1.1 %d/%d succeeded, %d of them between the first and last reload",
		counts.succeeded, counts.total, total.Load()-goFail.Load(), total.Load(), during.Load())

	// A broken file: refused, counted, old config keeps serving.
	g.write(strings.Replace(confA(g), "upstream: echo", "upstream: ehco", 1))
	g.reload("failure")
	resp, err := c.Get(g.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "A" {
		t.Fatalf("after a refused reload: %d %q", resp.StatusCode, b)
	}
	if !g.waitLog(regexp.QuoteMeta(`routes[0].upstream: upstream \"ehco\" is not defined (did you mean \"echo\"?)`)) {
		t.Fatalf("the refusal does not name the key and the fix")
	}
}

// TestGracefulSIGTERM: in-flight slow requests complete after SIGTERM;
// the process exits 0.
func TestGracefulSIGTERM(t *testing.T) {
	up, hold, held := echoUpstream(t)
	g := startGW(t, baseConfig(up, "x"))
	c := g.client()
	const n = 3
	results := make(chan string, n)
	for i := 0; i < n; i++ {
		go func() {
			resp, err := c.Get(g.url("/slow"))
			if err != nil {
				results <- err.Error()
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			results <- strconv.Itoa(resp.StatusCode)
		}()
	}
	for i := 0; i < n; i++ {
		<-held
	}
	g.cmd.Process.Signal(syscall.SIGTERM)
	// Draining has begun once the listener refuses new connections.
	for i := 0; ; i++ {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", g.port), time.Second)
		if err != nil {
			break
		}
		conn.Close()
		if i > 500 {
			t.Fatal("listener still accepting after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(hold)
	for i := 0; i < n; i++ {
		if r := <-results; r != "200" {
			t.Fatalf("in-flight request: %s", r)
		}
	}
	select {
	case err := <-g.exited:
		if err != nil {
			t.Fatalf("ztgate exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ztgate did not exit after draining")
	}
}

func TestValidateCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(`
storage: `+dir+`
listeners: [{ name: p, address: "127.0.0.1:0", tls: { names: [localhost] } }]
routes: [{ name: r, direct_response: { status: 204 } }]
`), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`
listners: []
routes: [{ name: r, upstream: detials }]
upstreams: [{ name: details, endpoints: ["10.0.0.7:9080"] }]
`), 0o644)
	out, err := exec.Command(ztgateBin, "validate", "-c", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok") {
		t.Fatalf("validate good: %v\n%s", err, out)
	}
	out, err = exec.Command(ztgateBin, "validate", "-c", bad).CombinedOutput()
	var ee *exec.ExitError
	if err == nil || !errorsAs(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("validate bad: %v\n%s", err, out)
	}
	for _, want := range []string{
		bad + `: listners: unknown top-level key (did you mean "listeners"?)`,
	} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("validate output lacks %q:\n%s", want, out)
		}
	}
	out, _ = exec.Command(ztgateBin, "validate", "-c", good, "--print").CombinedOutput()
	var printed map[string]any
	if err := json.Unmarshal(out, &printed); err != nil {
		t.Fatalf("--print is not JSON: %v\n%s", err, out)
	}
	_ = context.Background
}

func errorsAs(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	if ok {
		*target = e
	}
	return ok
}

// TestRefusedReloadChangesNoComponent: a reload that adds a certificate
// name and a broken Rego module is refused before any component applies
// it: the certificate manager never hears of the new name.
func TestRefusedReloadChangesNoComponent(t *testing.T) {
	up, _, _ := echoUpstream(t)
	rego := filepath.Join(t.TempDir(), "broken.rego")
	os.WriteFile(rego, []byte("package envoy.authz\nallow if { input.x == \n"), 0o644)
	g := startGW(t, baseConfig(up, "A"))
	broken := strings.Replace(baseConfig(up, "B")(g), "names: [localhost, 127.0.0.1]", "names: [localhost, 127.0.0.1, added.test]", 1) + fmt.Sprintf(`
authz:
  policies:
    - name: broken
      rego: { files: [%s], query: data.envoy.authz.allow }
`, rego)
	g.write(broken)
	g.reload("failure")
	resp, err := http.Get(g.adminURL("/certificates"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "localhost") || strings.Contains(string(b), "added.test") {
		t.Fatalf("/certificates after a refused reload:\n%s", b)
	}
	c := g.client()
	resp, err = c.Get(g.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "A" {
		t.Fatalf("after a refused reload the body is %q, want the old config's A", b)
	}
}

// TestSIGHUPDuringStartup: a reload signal that arrives while a large
// config is still being compiled at start is applied once serving, and
// does not kill the process (SIGHUP's default action). Caveat: when the
// test runner itself was started with SIGHUP ignored, the child inherits
// that and the old behaviour cannot be told apart; the start window with
// 5,000 routes and policies is about 100 ms.
func TestSIGHUPDuringStartup(t *testing.T) {
	up, _, _ := echoUpstream(t)
	dir := t.TempDir()
	port, admin := freePort(t), freePort(t)
	var b strings.Builder
	fmt.Fprintf(&b, `
storage: %s/state
admin: { address: "127.0.0.1:%d" }
listeners: [{ name: public, address: "127.0.0.1:%d", tls: { names: [localhost] } }]
upstreams: [{ name: echo, endpoints: ["%s"] }]
routes:
`, dir, admin, port, up)
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&b, "  - { name: r%d, match: { path: /r/%d, methods: [GET] }, upstream: echo, policies: [p%d] }\n", i, i, i)
	}
	b.WriteString("authz:\n  policies:\n")
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&b, "    - { name: p%d, action: ALLOW, rules: [{ from: [{ source: { ip_blocks: [10.%d.0.0/16] } }] }] }\n", i, i%256)
	}
	conf := filepath.Join(dir, "ztgate.yaml")
	os.WriteFile(conf, []byte(b.String()), 0o644)
	logs := &lockedBuf{}
	cmd := exec.Command(ztgateBin, "run", "-c", conf)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	}()
	// The "starting" line is written once signals are subscribed and
	// before the config is compiled.
	for i := 0; !strings.Contains(logs.String(), `"msg":"starting"`); i++ {
		if i > 1000 {
			t.Fatalf("no starting line:\n%s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	g := &gw{t: t, dir: dir, port: port, admin: admin, logs: logs, exited: exited, cmd: cmd}
	g.waitReady()
	for i := 0; g.metric(`ztgate_config_reload_total{result="success"}`) < 1; i++ {
		if i > 1000 {
			t.Fatalf("the queued SIGHUP was not applied\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
