// Command h3load sends HTTP/3 GET requests over a fixed number of QUIC
// connections for a fixed time and reports requests/s and latency
// percentiles on one "key=value" line, like hsload. h2load here has no
// HTTP/3, so this is zbench's HTTP/3 load generator.
//
// The server certificate is verified against -ca (no InsecureSkipVerify).
// Each of the -c connections has its own http3.Transport (so its own QUIC
// connection) and -m workers sending one request at a time: -c16 -m4 is
// the same 64 concurrent streams as h2load -c16 -m4.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

func main() {
	url := flag.String("url", "https://localhost:8443/", "URL to GET")
	caFile := flag.String("ca", "", "PEM file of the CA that signed the server certificate (required)")
	conns := flag.Int("c", 16, "QUIC connections")
	streams := flag.Int("m", 4, "concurrent requests per connection")
	dur := flag.Duration("d", 10*time.Second, "duration (bounded)")
	header := flag.String("H", "", `one extra request header, "Name: value"`)
	flag.Parse()
	if err := run(*url, *caFile, *conns, *streams, *dur, *header); err != nil {
		fmt.Fprintln(os.Stderr, "h3load:", err)
		os.Exit(1)
	}
}

func run(url, caFile string, conns, streams int, dur time.Duration, header string) error {
	if dur <= 0 || dur > 5*time.Minute {
		return errors.New("-d must be in (0, 5m]")
	}
	if conns < 1 || conns > 1000 || streams < 1 || streams > 1000 {
		return errors.New("-c and -m must be in 1..1000")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("-ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("-ca: no certificates in %s", caFile)
	}
	var hname, hval string
	if header != "" {
		var ok bool
		if hname, hval, ok = cut(header); !ok {
			return fmt.Errorf(`-H: want "Name: value", got %q`, header)
		}
	}
	transports := make([]*http3.Transport, conns)
	for i := range transports {
		transports[i] = &http3.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13},
			QUICConfig:      &quic.Config{HandshakeIdleTimeout: 5 * time.Second, MaxIdleTimeout: 30 * time.Second},
		}
		defer transports[i].Close()
	}
	// Open every connection first (the server may still be binding its
	// UDP socket right after start): one request each, retried for 5 s.
	for _, tr := range transports {
		if err := first(tr, url, hname, hval); err != nil {
			return err
		}
	}
	var ok, fail atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for _, tr := range transports {
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		for j := 0; j < streams; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				local := make([]time.Duration, 0, 1024)
				for ctx.Err() == nil {
					t0 := time.Now()
					err := get(client, url, hname, hval)
					if ctx.Err() != nil && err != nil {
						break // cut by the deadline, not a failure
					}
					if err != nil {
						fail.Add(1)
						continue
					}
					local = append(local, time.Since(t0))
					ok.Add(1)
				}
				mu.Lock()
				lat = append(lat, local...)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	fmt.Printf("requests=%d failures=%d rate=%.1f p50_ms=%.2f p99_ms=%.2f\n",
		ok.Load(), fail.Load(), float64(ok.Load())/elapsed.Seconds(), pct(0.5), pct(0.99))
	if ok.Load() == 0 {
		return errors.New("no request succeeded")
	}
	return nil
}

func first(tr *http3.Transport, url, hname, hval string) error {
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := get(client, url, hname, hval)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("first request: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func get(c *http.Client, url, hname, hval string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if hname != "" {
		req.Header.Set(hname, hval)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func cut(h string) (string, string, bool) {
	for i := 0; i < len(h); i++ {
		if h[i] == ':' {
			name, val := h[:i], h[i+1:]
			for len(val) > 0 && val[0] == ' ' {
				val = val[1:]
			}
			return name, val, name != ""
		}
	}
	return "", "", false
}
