// Command idleconns opens -n TLS 1.3 keep-alive connections, -par at a
// time, sends one GET on each and reads the answer, then holds them all
// idle. It prints one line when they are all up:
//
//	up established=N failures=F
//
// then, after -hold, sends a second GET on every connection to prove the
// server kept them, prints
//
//	done established=N alive=A failures=F
//
// and closes everything. zbench samples the server's RSS while they are
// idle. The server certificate is verified against -ca.
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

type conn struct {
	c  *tls.Conn
	br *bufio.Reader
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "server address")
	sni := flag.String("sni", "localhost", "server name")
	caFile := flag.String("ca", "", "PEM file of the CA that signed the server certificate (required)")
	n := flag.Int("n", 10000, "connections to hold (at most 18000: RLIMIT_NOFILE is 20000 here)")
	par := flag.Int("par", 64, "connections opened concurrently")
	hold := flag.Duration("hold", 15*time.Second, "how long to hold them idle (bounded)")
	flag.Parse()
	if *n < 1 || *n > 18000 || *par < 1 || *hold > 5*time.Minute {
		fmt.Fprintln(os.Stderr, "idleconns: -n must be 1..18000, -par ≥ 1, -hold ≤ 5m")
		os.Exit(2)
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "idleconns: -ca:", err)
		os.Exit(2)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fmt.Fprintln(os.Stderr, "idleconns: -ca: no certificates in", *caFile)
		os.Exit(2)
	}
	cfg := &tls.Config{ServerName: *sni, RootCAs: roots, MinVersion: tls.VersionTLS13,
		CurvePreferences: []tls.CurveID{tls.X25519}, NextProtos: []string{"http/1.1"}}
	req := []byte(fmt.Sprintf("GET / HTTP/1.1\r\nHost: %s\r\n\r\n", *sni))

	conns := make([]*conn, *n)
	var fail atomic.Int64
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for w := 0; w < *par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(conns) {
					return
				}
				c, err := open(*addr, cfg, req)
				if err != nil {
					fail.Add(1)
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	est := 0
	for _, c := range conns {
		if c != nil {
			est++
		}
	}
	fmt.Printf("up established=%d failures=%d\n", est, fail.Load())
	os.Stdout.Sync()
	time.Sleep(*hold)

	var alive atomic.Int64
	next.Store(0)
	for w := 0; w < *par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(conns) {
					return
				}
				if c := conns[i]; c != nil && c.get(req) == nil {
					alive.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			c.c.Close()
		}
	}
	fmt.Printf("done established=%d alive=%d failures=%d\n", est, alive.Load(), fail.Load())
}

func open(addr string, cfg *tls.Config, req []byte) (*conn, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	cc := &conn{c: c, br: bufio.NewReaderSize(c, 4096)}
	if err := cc.get(req); err != nil {
		c.Close()
		return nil, err
	}
	return cc, nil
}

func (c *conn) get(req []byte) error {
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.c.SetDeadline(time.Time{})
	if _, err := c.c.Write(req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	if err == nil && resp.Close {
		err = fmt.Errorf("server closed the keep-alive connection")
	}
	return err
}
