// Command hsload opens new TLS connections as fast as it can for a fixed
// time: a full handshake (no session resumption), one GET, close. It
// reports handshakes/s and latency percentiles, one "key=value" line.
//
// With -connect host:port, each connection first asks the HTTP proxy at
// -addr for a CONNECT tunnel to host:port (ztgate's egress connect mode),
// then handshakes through it; the latency includes the CONNECT round trip.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "server address")
	sni := flag.String("sni", "bench.test", "server name")
	conc := flag.Int("c", 50, "concurrent workers")
	dur := flag.Duration("d", 10*time.Second, "duration (bounded)")
	curve := flag.String("curve", "x25519", "x25519 | p256 | mlkem")
	caFile := flag.String("ca", "", "PEM file of the CA that signed the server certificate (required)")
	connect := flag.String("connect", "", "host:port: tunnel through the HTTP CONNECT proxy at -addr")
	flag.Parse()
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hsload: -ca:", err)
		os.Exit(2)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fmt.Fprintln(os.Stderr, "hsload: -ca: no certificates in", *caFile)
		os.Exit(2)
	}
	if *dur > 5*time.Minute {
		fmt.Fprintln(os.Stderr, "hsload: -d is capped at 5m")
		os.Exit(2)
	}
	curves := map[string][]tls.CurveID{"x25519": {tls.X25519}, "p256": {tls.CurveP256}, "mlkem": {tls.X25519MLKEM768}}[*curve]
	cfg := &tls.Config{
		ServerName:       *sni,
		RootCAs:          roots,
		CurvePreferences: curves,
		MinVersion:       tls.VersionTLS13,
		NextProtos:       []string{"http/1.1"},
	}
	req := fmt.Sprintf("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", *sni)
	var ok, fail atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	deadline := time.Now().Add(*dur)
	var wg sync.WaitGroup
	for i := 0; i < *conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for time.Now().Before(deadline) {
				start := time.Now()
				c, err := dial(*addr, *connect, cfg)
				if err != nil {
					fail.Add(1)
					continue
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				local = append(local, time.Since(start))
				_, err = c.Write([]byte(req))
				if err == nil {
					var resp *http.Response
					resp, err = http.ReadResponse(bufio.NewReader(c), nil)
					if err == nil {
						resp.Body.Close()
					}
				}
				c.Close()
				if err != nil {
					fail.Add(1)
					continue
				}
				ok.Add(1)
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	fmt.Printf("handshakes=%d failures=%d rate=%.1f p50_ms=%.2f p99_ms=%.2f\n",
		ok.Load(), fail.Load(), float64(ok.Load())/dur.Seconds(), pct(0.5), pct(0.99))
}

// dial opens a TLS connection to addr, or through the CONNECT proxy at
// addr to target.
func dial(addr, target string, cfg *tls.Config) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if target == "" {
		return tls.DialWithDialer(d, "tcp", addr, cfg)
	}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(raw, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		raw.Close()
		return nil, err
	}
	// Read the answer byte-wise up to the blank line, so that nothing of
	// the server's TLS records is consumed by a buffer.
	var head []byte
	b := make([]byte, 1)
	for !strings.HasSuffix(string(head), "\r\n\r\n") {
		if _, err := raw.Read(b); err != nil {
			raw.Close()
			return nil, fmt.Errorf("CONNECT: %w", err)
		}
		if head = append(head, b[0]); len(head) > 8192 {
			raw.Close()
			return nil, fmt.Errorf("CONNECT: answer head too long")
		}
	}
	if !strings.HasPrefix(string(head), "HTTP/1.1 200") && !strings.HasPrefix(string(head), "HTTP/1.0 200") {
		raw.Close()
		return nil, fmt.Errorf("CONNECT refused: %q", strings.SplitN(string(head), "\r\n", 2)[0])
	}
	c := tls.Client(raw, cfg) // the 5 s deadline also bounds the handshake
	if err := c.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}
