// Command sniload opens new TLS connections as fast as it can for a
// bounded time: TCP connect (optionally CONNECT through a proxy), a full
// TLS 1.3 handshake (X25519, no resumption), one GET, close. It prints
// completed connections per second.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "", "host:port to connect to")
	sni := flag.String("sni", "allowed.test", "server name")
	connect := flag.String("connect", "", "CONNECT to this host:port first (addr is then the proxy)")
	bind := flag.String("bind", "", "local IP to connect from")
	conc := flag.Int("c", 50, "concurrent workers")
	dur := flag.Duration("d", 10*time.Second, "duration (at most 60s)")
	caFile := flag.String("ca", "", "PEM CA bundle that signs the origin's certificate (required)")
	flag.Parse()
	if *dur > 60*time.Second {
		*dur = 60 * time.Second
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	if *bind != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(*bind)}
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "-ca:", err)
		os.Exit(2)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	tc := &tls.Config{ServerName: *sni, RootCAs: roots, CurvePreferences: []tls.CurveID{tls.X25519}, MinVersion: tls.VersionTLS13}
	var ok, fail atomic.Int64
	deadline := time.Now().Add(*dur)
	var wg sync.WaitGroup
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if one(&d, *addr, *connect, tc) == nil {
					ok.Add(1)
				} else {
					fail.Add(1)
				}
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	el := time.Since(start).Seconds()
	fmt.Printf("conns=%d failed=%d seconds=%.2f rate=%.0f\n", ok.Load(), fail.Load(), el, float64(ok.Load())/el)
	if ok.Load() == 0 {
		os.Exit(1)
	}
}

func one(d *net.Dialer, addr, connect string, tc *tls.Config) error {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if connect != "" {
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\n\r\n", connect)
		want := "HTTP/1.1 200 Connection established\r\n\r\n"
		buf := make([]byte, len(want))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
			return fmt.Errorf("CONNECT refused")
		}
	}
	t := tls.Client(c, tc)
	fmt.Fprintf(t, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", tc.ServerName)
	resp, err := http.ReadResponse(bufio.NewReader(t), nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}
