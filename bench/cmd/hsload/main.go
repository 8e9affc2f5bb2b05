// Command hsload opens new TLS connections as fast as it can for a fixed
// time: a full handshake (no session resumption), one GET, close. It
// reports handshakes/s and latency percentiles, one "key=value" line.
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
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", *addr, cfg)
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
