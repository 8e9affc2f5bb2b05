package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"
)

// Fixed loopback ports (high, away from the tests' ephemeral ports).
const (
	upstreamPort = 18081
	originPort   = 19443 // TLS origin of the egress scenarios (CPU 0)
	stubPort     = 27310 // authoritative DNS stub (CPU 0)
	ztAdminPort  = 23900 // ztgate's admin server (pprof)
	serverName   = "localhost"
	egressName   = "allowed.test" // the name the egress load asks for
	deniedName   = "denied.test"  // resolves, but no proxy allows it
	allowNames   = 1000           // svcN.allowed.example, plus allowed.test
	dnsNames     = 500            // www.siteN.test: one name per registered domain
	missNames    = 500000         // dns-miss: fresh names, more than one run sends
	missZone     = "miss-test"    // a TLD of its own: dM.miss-test are registered domains
)

// env is what every scenario shares: certificates, the upstream, the
// egress origin, the DNS stub, the JWT material, peers.
type env struct {
	dir         string
	ca          string // CA PEM for clients
	certs       map[string]certPair
	peers       []*peer
	versions    map[string]string
	origin      *proc
	upstream    *proc
	stub        *proc
	jwt         jwtMaterial
	allow       []string // the egress allowlist (1,001 names)
	allowLst    string   // the allowlist, one name a line (haproxy -f)
	queries     string   // dnsperf query file
	missQueries string   // dnsperf query file of fresh names (dns-miss)
	missProbe   string   // a few other fresh names: dns-miss's readiness check
}

type certPair struct{ cert, key, combined string }

func setup(r *runner) (*env, error) {
	e := &env{dir: r.o.work, certs: map[string]certPair{}, versions: map[string]string{}}
	if err := e.makeCerts(); err != nil {
		return nil, err
	}
	if err := e.startUpstream(r); err != nil {
		return nil, err
	}
	var err error
	if e.jwt, err = makeJWT(e.dir); err != nil {
		return nil, err
	}
	if err := e.writeNames(); err != nil {
		return nil, err
	}
	if err := e.startStub(r); err != nil {
		return nil, err
	}
	if err := e.startOrigin(r); err != nil {
		return nil, err
	}
	e.findPeers(r)
	return e, nil
}

// writeNames writes the egress allowlist, the DNS stub's zone and the
// dnsperf query file.
func (e *env) writeNames() error {
	e.allow = []string{egressName}
	for i := 0; i < allowNames; i++ {
		e.allow = append(e.allow, fmt.Sprintf("svc%d.allowed.example", i))
	}
	e.allowLst = filepath.Join(e.dir, "allow.lst")
	if err := os.WriteFile(e.allowLst, []byte(strings.Join(e.allow, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	var zone, q strings.Builder
	for _, n := range append(append([]string{}, e.allow...), deniedName) {
		fmt.Fprintf(&zone, "%s 127.0.0.1\n", n)
	}
	for i := 0; i < dnsNames; i++ {
		fmt.Fprintf(&zone, "www.site%d.test 10.%d.%d.1\n", i, i/256, i%256)
		fmt.Fprintf(&q, "www.site%d.test A\n", i)
	}
	e.queries = filepath.Join(e.dir, "queries.txt")
	if err := os.WriteFile(e.queries, []byte(q.String()), 0o644); err != nil {
		return err
	}
	// Cache misses: every query a fresh name, ten per registered domain
	// (xN.dM.miss-test), so that no tunnel-detection window fills up.
	var miss strings.Builder
	for i := 0; i < missNames; i++ {
		fmt.Fprintf(&miss, "x%d.d%d.%s A\n", i, i%(missNames/10), missZone)
	}
	e.missQueries = filepath.Join(e.dir, "queries-miss.txt")
	if err := os.WriteFile(e.missQueries, []byte(miss.String()), 0o644); err != nil {
		return err
	}
	var probe strings.Builder
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&probe, "probe%d.p.%s A\n", i, missZone)
	}
	e.missProbe = filepath.Join(e.dir, "queries-miss-probe.txt")
	if err := os.WriteFile(e.missProbe, []byte(probe.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(e.dir, "zone.txt"), []byte(zone.String()), 0o644)
}

// startStub runs bench/cmd/dnsstub on CPU 0: the upstream of every DNS
// peer, and the resolver of ztgate's egress proxy.
func (e *env) startStub(r *runner) error {
	if _, err := os.Stat(r.o.dnsstub); err != nil {
		return fmt.Errorf("-dnsstub %s: %w (go build -o bin/dnsstub ./bench/cmd/dnsstub)", r.o.dnsstub, err)
	}
	var err error
	e.stub, err = r.spawn("dnsstub", "0", nil, abs(r.o.dnsstub), "-addr", fmt.Sprintf("127.0.0.1:%d", stubPort),
		"-names", filepath.Join(e.dir, "zone.txt"), "-wildcard", missZone)
	if err != nil {
		return err
	}
	return waitPort(r.ctx, stubPort, 10*time.Second)
}

// startOrigin runs the egress scenarios' TLS origin on CPU 0: nginx
// serving allowed.test (and the allowlist's names) with a 2-byte index
// and a 4 GiB sparse file for the bulk transfer, closing after each
// request (the load makes one request per connection).
func (e *env) startOrigin(r *runner) error {
	www := filepath.Join(e.dir, "www-origin")
	os.MkdirAll(www, 0o755)
	os.WriteFile(filepath.Join(www, "index.html"), []byte("ok"), 0o644)
	if err := os.Truncate(filepath.Join(www, "big.bin"), 0); err != nil {
		f, err := os.Create(filepath.Join(www, "big.bin"))
		if err != nil {
			return err
		}
		f.Close()
	}
	if err := os.Truncate(filepath.Join(www, "big.bin"), 4<<30); err != nil {
		return err
	}
	conf, err := writeOriginConf(e, "origin")
	if err != nil {
		return err
	}
	e.origin, err = r.spawn("origin", "0", nil, lookPath("nginx"), "-p", e.dir, "-c", conf)
	if err != nil {
		return err
	}
	return waitPort(r.ctx, originPort, 10*time.Second)
}

// makeCerts writes a CA and ECDSA P-256 and RSA-2048 leaves for localhost.
func (e *env) makeCerts() error {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "zbench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	e.ca = filepath.Join(e.dir, "ca.pem")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if err := os.WriteFile(e.ca, caPEM, 0o644); err != nil {
		return err
	}
	for _, kind := range []string{"ecdsa", "rsa", "origin"} {
		var pub, priv any
		if kind == "rsa" {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				return err
			}
			pub, priv = &k.PublicKey, k
		} else {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			pub, priv = &k.PublicKey, k
		}
		names := []string{serverName}
		if kind == "origin" { // the egress origin: ECDSA, every name the load may ask for
			names = []string{egressName, deniedName, "*.allowed.example"}
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
			DNSNames: names, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, pub, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return err
		}
		chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), caPEM...)
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
		p := certPair{cert: filepath.Join(e.dir, kind+".pem"), key: filepath.Join(e.dir, kind+".key"), combined: filepath.Join(e.dir, kind+".combined.pem")}
		os.WriteFile(p.cert, chain, 0o644)
		os.WriteFile(p.key, keyPEM, 0o600)
		os.WriteFile(p.combined, append(append([]byte{}, chain...), keyPEM...), 0o600)
		e.certs[kind] = p
	}
	return nil
}

// startUpstream runs nginx on CPU 0 serving a 1 KiB body on
// 127.0.0.1:18081, the origin every proxy scenario forwards to.
func (e *env) startUpstream(r *runner) error {
	nginx := lookPath("nginx")
	if nginx == "" {
		return fmt.Errorf("nginx is required for the upstream (make deps)")
	}
	www := filepath.Join(e.dir, "www")
	os.MkdirAll(www, 0o755)
	os.WriteFile(filepath.Join(www, "index.html"), bytes.Repeat([]byte("x"), 1024), 0o644)
	conf := filepath.Join(e.dir, "upstream-nginx.conf")
	err := writeTemplate(conf, `daemon off;
master_process off;
worker_processes 1;
error_log {{.Dir}}/upstream-error.log warn;
pid {{.Dir}}/upstream.pid;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path {{.Dir}}/tmp-up-body;
  proxy_temp_path {{.Dir}}/tmp-up-proxy;
  fastcgi_temp_path {{.Dir}}/tmp-up-fcgi;
  uwsgi_temp_path {{.Dir}}/tmp-up-uwsgi;
  scgi_temp_path {{.Dir}}/tmp-up-scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:{{.Port}} reuseport backlog=4096;
    root {{.WWW}};
    location / { try_files /index.html =404; } # the same 1 KiB for every path (reload uses /r1)
  }
}
`, map[string]any{"Dir": e.dir, "Port": upstreamPort, "WWW": www})
	if err != nil {
		return err
	}
	e.upstream, err = r.spawn("upstream", "0", nil, nginx, "-p", e.dir, "-c", conf)
	if err != nil {
		return err
	}
	return waitPort(r.ctx, upstreamPort, 10*time.Second)
}

func writeTemplate(path, text string, data any) error {
	t, err := template.New(filepath.Base(path)).Parse(text)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// proc is a process the runner started. Only these are ever stopped.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	mu   sync.Mutex
	done chan struct{}
}

type lockedWriter struct {
	p *proc
}

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if w.p.out.Len() > 1<<20 {
		return len(b), nil // bounded
	}
	return w.p.out.Write(b)
}

// all is everything the process printed (bounded at 1 MiB).
func (p *proc) all() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.out.String()
	if len(s) > 4000 {
		s = "..." + s[len(s)-4000:]
	}
	return s
}

// spawn starts argv pinned to cpu with taskset (exec'd, so the PID is
// the server's own).
func (r *runner) spawn(name, cpu string, env []string, argv ...string) (*proc, error) {
	args := append([]string{"-c", cpu}, argv...)
	cmd := exec.Command("taskset", args...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{name: name, cmd: cmd, out: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = lockedWriter{p}, lockedWriter{p}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { cmd.Wait(); close(p.done) }()
	r.procs = append(r.procs, p)
	return p, nil
}

func (r *runner) stop(p *proc) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (r *runner) stopAll() {
	for i := len(r.procs) - 1; i >= 0; i-- {
		r.stop(r.procs[i])
	}
	r.procs = nil
}

// cpu returns the process's user+system CPU time from /proc.
func (p *proc) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("%s exited: %s", p.name, p.output())
	}
	return statCPU(b), nil
}

// selfCPU is zbench's own CPU time (its checks and profile fetches).
func selfCPU() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	return statCPU(b)
}

func statCPU(b []byte) time.Duration {
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz
}

func waitPort(ctx context.Context, port int, max time.Duration) error {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("port %d not open after %s", port, max)
}

func versionOf(argv ...string) string {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	s := strings.TrimSpace(string(out))
	if i := strings.IndexByte(s, '\n'); i > 0 {
		s = s[:i]
	}
	return s
}

func logf(format string, args ...any) { log.Printf(format, args...) }

// writeOriginConf writes the TLS origin's nginx config, under name (its
// config, pid, log and temp files): the shared origin's, or the copy
// inside egress-conn's network namespace.
func writeOriginConf(e *env, name string) (string, error) {
	c := e.certs["origin"]
	conf := filepath.Join(e.dir, name+"-nginx.conf")
	return conf, writeTemplate(conf, `daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
error_log {{.Dir}}/{{.Name}}-error.log warn;
pid {{.Dir}}/{{.Name}}.pid;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path {{.Dir}}/tmp-{{.Name}}-body;
  proxy_temp_path {{.Dir}}/tmp-{{.Name}}-proxy;
  fastcgi_temp_path {{.Dir}}/tmp-{{.Name}}-fcgi;
  uwsgi_temp_path {{.Dir}}/tmp-{{.Name}}-uwsgi;
  scgi_temp_path {{.Dir}}/tmp-{{.Name}}-scgi;
  server {
    listen 127.0.0.1:{{.Port}} ssl reuseport backlog=4096;
    ssl_certificate {{.Cert}};
    ssl_certificate_key {{.Key}};
    ssl_protocols TLSv1.3;
    ssl_session_tickets off;
    ssl_session_cache off;
    keepalive_timeout 0;
    root {{.WWW}};
  }
}
`, map[string]any{"Dir": e.dir, "Name": name, "Port": originPort, "WWW": filepath.Join(e.dir, "www-origin"), "Cert": c.cert, "Key": c.key})
}
