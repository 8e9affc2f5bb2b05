package egress

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
)

// logRec is one captured log record.
type logRec struct {
	msg   string
	attrs map[string]string
}

// recorder is a slog.Handler that keeps records for assertions.
type recorder struct {
	mu   sync.Mutex
	cond *sync.Cond
	recs []logRec
}

func newRecorder() *recorder {
	r := &recorder{}
	r.cond = sync.NewCond(&r.mu)
	return r
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	lr := logRec{msg: rec.Message, attrs: map[string]string{}}
	rec.Attrs(func(a slog.Attr) bool {
		lr.attrs[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	r.recs = append(r.recs, lr)
	r.cond.Broadcast()
	r.mu.Unlock()
	return nil
}

// waitN waits until n records match (see wait).
func (r *recorder) waitN(t *testing.T, n int, msg string, want map[string]string) {
	t.Helper()
	for i := 0; i < n; i++ {
		r.wait(t, msg, want, i)
	}
}

// wait returns the first record with msg whose attrs contain all of want.
// It fails the test if none arrives within 15 s (a hang bound, not a
// timing assertion).
func (r *recorder) wait(t *testing.T, msg string, want map[string]string, skip ...int) logRec {
	t.Helper()
	timer := time.AfterFunc(15*time.Second, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(15 * time.Second)
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		skipped := 0
		for _, lr := range r.recs {
			if lr.msg != msg {
				continue
			}
			ok := true
			for k, v := range want {
				if lr.attrs[k] != v {
					ok = false
					break
				}
			}
			if ok && len(skip) > 0 && skipped < skip[0] {
				skipped++
				continue
			}
			if ok {
				return lr
			}
		}
		if time.Now().After(deadline) {
			var dump []string
			for _, lr := range r.recs {
				dump = append(dump, fmt.Sprintf("%s %v", lr.msg, lr.attrs))
			}
			t.Fatalf("no %q record with %v; have:\n%s", msg, want, strings.Join(dump, "\n"))
		}
		r.cond.Wait()
	}
}

// pki is a throwaway CA and a leaf for the origin's names.
type pki struct {
	caPEM   []byte
	caFile  string
	caPool  *x509.CertPool
	ca      *x509.Certificate
	caKey   *ecdsa.PrivateKey
	dir     string
	tlsCert tls.Certificate
}

func newPKI(t *testing.T, names ...string) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "egress test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{ca: ca, caKey: key, dir: t.TempDir(), caPool: x509.NewCertPool()}
	p.caPool.AddCert(ca)
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	p.caFile = filepath.Join(p.dir, "ca.pem")
	os.WriteFile(p.caFile, p.caPEM, 0o600)
	p.tlsCert = p.leaf(t, names, nil)
	return p
}

// leaf issues a certificate for DNS names and optional URI SANs.
func (p *pki) leaf(t *testing.T, names []string, uris []string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "leaf"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     names,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	for _, u := range uris {
		pu, _ := url.Parse(u)
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// writePair writes a certificate and key as PEM files and returns their paths.
func (p *pki) writePair(t *testing.T, name string, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	kder, _ := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	certFile = filepath.Join(p.dir, name+".pem")
	keyFile = filepath.Join(p.dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// origin is a TLS HTTP server on loopback answering "hello from <sni>".
func startOrigin(t *testing.T, p *pki) (port int) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{p.tlsCert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/big" {
				io.CopyN(w, zeroReader{}, 8<<20)
				return
			}
			fmt.Fprintf(w, "hello from %s", r.TLS.ServerName)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// startPlainOrigin is a plain-HTTP server on loopback.
func startPlainOrigin(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "plain hello, host=%s proxy-auth=%q", r.Host, r.Header.Get("Proxy-Authorization"))
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// dnsServer is a miekg/dns server on loopback UDP answering A records from
// a fixed table, NXDOMAIN otherwise.
func startDNS(t *testing.T, table map[string][]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		name := strings.TrimSuffix(strings.ToLower(q.Question[0].Name), ".")
		addrs, ok := table[name]
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, a := range addrs {
			ip := netip.MustParseAddr(a)
			switch {
			case ip.Is4() && q.Question[0].Qtype == dns.TypeA:
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: ip.AsSlice()})
			case ip.Is6() && q.Question[0].Qtype == dns.TypeAAAA:
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60}, AAAA: ip.AsSlice()})
			}
		}
		w.WriteMsg(m)
	})
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: mux, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// env is a running proxy with its log recorder.
type env struct {
	p   *Proxy
	rec *recorder
	reg *prometheus.Registry
}

// startProxy parses yaml (an egress: section plus whatever else) through
// configs.Parse, then starts the proxy.
func startProxy(t *testing.T, yaml string, deps Deps) *env {
	t.Helper()
	cfg, err := configs.Parse("test.yaml", []byte(yaml), nil)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	rec := newRecorder()
	reg := prometheus.NewRegistry()
	deps.Logger = slog.New(rec)
	deps.Metrics = reg
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := p.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return &env{p: p, rec: rec, reg: reg}
}

// cleanEnv is the environment for external tools: no proxy variables.
func cleanEnv() []string { return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()} }

func slogFor(r *recorder) *slog.Logger { return slog.New(r) }

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
