// Command hsbench measures full TLS handshakes/s: a server whose key is
// served by an accel provider, and a Go client, run as separate
// processes so each can be pinned to its own core with taskset.
//
//	hsbench gen -dir /tmp/hs                     # rsa2048.{crt,key}, ecdsa_p256.{crt,key}
//	taskset -c 1 hsbench serve -provider openssl -cert /tmp/hs/rsa2048.crt -key /tmp/hs/rsa2048.key -addr 127.0.0.1:23443 -d 15s
//	taskset -c 0 hsbench load -addr 127.0.0.1:23443 -ca /tmp/hs/rsa2048.crt -c 50 -d 10s
//	hsbench bench                                # what `ztgate accel bench` prints
//	hsbench check -addr 127.0.0.1:23443 -ca /tmp/hs/rsa2048.crt   # what a server negotiates
//
// The client (like the baseline's hsload) makes new connections with no
// session resumption, X25519, one GET each. check makes one such
// connection and prints what was negotiated (version, cipher suite,
// group, ALPN, certificate key size) and how many session tickets the
// server sent, so a comparison can show every server did the same work.
//
// m1.sh beside this file measures the ztgate binary itself (go and
// openssl providers) against nginx, haproxy and caddy with hsload.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ztgate/ztgate/accel"
	"github.com/ztgate/ztgate/accel/internal/loadgen"
	"github.com/ztgate/ztgate/configs"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hsbench gen|serve|load|bench|check [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = gen(os.Args[2:])
	case "serve":
		err = serve(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	case "bench":
		err = bench(os.Args[2:])
	case "check":
		err = check(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hsbench:", err)
		os.Exit(1)
	}
}

func gen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	dir := fs.String("dir", ".", "output directory")
	fs.Parse(args)
	for _, kt := range []string{"rsa2048", "ecdsa_p256"} {
		k, err := accel.GenerateKey(kt)
		if err != nil {
			return err
		}
		c, err := accel.SelfSignedCert(k)
		if err != nil {
			return err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(*dir, kt+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(*dir, kt+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	provider := fs.String("provider", "go", "go, openssl or auto")
	certFile := fs.String("cert", "", "certificate PEM")
	keyFile := fs.String("key", "", "key PEM")
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	d := fs.Duration("d", 15*time.Second, "serve this long, then print the count")
	fs.Parse(args)
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return err
	}
	e, err := accel.New(configs.Accel{Provider: *provider, Required: true},
		accel.Deps{Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		return err
	}
	defer e.Close()
	wc, err := e.Wrap(&cert)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "serving on %s with %s\n", ln.Addr(), e.Provider())
	srv := loadgen.Serve(ln, &tls.Config{Certificates: []tls.Certificate{*wc}, MinVersion: tls.VersionTLS12, SessionTicketsDisabled: true})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	select {
	case <-ctx.Done():
	case <-time.After(*d):
	}
	srv.Close()
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	n := srv.Handshakes.Load()
	per := 0.0
	if n > 0 {
		per = float64(cpu.Microseconds()) / float64(n)
	}
	fmt.Printf("provider=%s handshakes=%d failures=%d cpu=%.2fs us_per_handshake=%.0f\n", e.Provider(), n, srv.Failures.Load(), cpu.Seconds(), per)
	return nil
}

func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	addr := fs.String("addr", "", "server address")
	ca := fs.String("ca", "", "CA (the server's self-signed certificate)")
	sni := fs.String("sni", "bench.test", "server name")
	conc := fs.Int("c", 50, "concurrent clients")
	d := fs.Duration("d", 10*time.Second, "duration (at most 10m)")
	fs.Parse(args)
	if *d > 10*time.Minute {
		return fmt.Errorf("-d %s is longer than 10m", *d)
	}
	roots, err := loadRoots(*ca)
	if err != nil {
		return err
	}
	r := loadgen.Run(context.Background(), *addr, &tls.Config{RootCAs: roots, ServerName: *sni,
		MinVersion: tls.VersionTLS13, CurvePreferences: []tls.CurveID{tls.X25519}}, *conc, *d)
	fmt.Printf("handshakes=%d failures=%d rate=%.0f/s\n", r.Handshakes, r.Failures, r.Rate())
	if r.FirstError != nil {
		fmt.Printf("first failure: %v\n", r.FirstError)
	}
	return nil
}

func loadRoots(ca string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("%s has no certificate", ca)
	}
	return roots, nil
}

// bench runs accel.Bench, as `ztgate accel bench` does.
func bench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	sign := fs.Duration("sign", time.Second, "time per sign cell")
	hs := fs.Duration("handshakes", 2*time.Second, "time per handshake cell (negative: skip)")
	conc := fs.Int("c", 0, "handshake clients (0: 4 per core)")
	fs.Parse(args)
	return accel.Bench(context.Background(), os.Stdout, accel.BenchOptions{SignDuration: *sign, HandshakeDuration: *hs, Concurrency: *conc})
}

// ticketCounter is a client session cache that only counts the session
// tickets the server sends; it never offers one back, so nothing resumes.
type ticketCounter struct{ n atomic.Int32 }

func (c *ticketCounter) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (c *ticketCounter) Put(string, *tls.ClientSessionState)        { c.n.Add(1) }

// check makes one connection as the load does (TLS 1.3, X25519, ALPN
// http/1.1, one GET) and prints what the server negotiated.
func check(args []string) error {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	addr := fs.String("addr", "", "server address")
	ca := fs.String("ca", "", "CA (the server's self-signed certificate)")
	sni := fs.String("sni", "bench.test", "server name")
	fs.Parse(args)
	roots, err := loadRoots(*ca)
	if err != nil {
		return err
	}
	tickets := &ticketCounter{}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", *addr, &tls.Config{RootCAs: roots, ServerName: *sni,
		MinVersion: tls.VersionTLS13, CurvePreferences: []tls.CurveID{tls.X25519}, NextProtos: []string{"http/1.1"},
		ClientSessionCache: tickets})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", *sni); err != nil {
		return err
	}
	// Tickets come after the handshake; read the answer to the end.
	if _, err := io.Copy(io.Discard, c); err != nil {
		return err
	}
	cs := c.ConnectionState()
	bits := 0
	switch k := cs.PeerCertificates[0].PublicKey.(type) {
	case *rsa.PublicKey:
		bits = k.N.BitLen()
	case *ecdsa.PublicKey:
		bits = k.Curve.Params().BitSize
	}
	fmt.Printf("version=%s cipher=%s group=%s alpn=%s cert_key_bits=%d resumed=%v session_tickets_sent=%d\n",
		tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite), cs.CurveID, cs.NegotiatedProtocol, bits,
		cs.DidResume, tickets.n.Load())
	return nil
}
