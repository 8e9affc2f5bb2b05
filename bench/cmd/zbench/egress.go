package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// checkAllowlist proves the proxy does the scenario's work: a name on
// the allowlist reaches the origin (GET / answers 200), one that is not
// (but resolves, and is in the origin's certificate) does not.
func checkAllowlist(r *runner, t *target) error {
	// A few tries: a proxy may accept before its first dial can work.
	var err error
	for try := 0; try < 5; try++ {
		if err = tlsProbe(r.env.ca, t, egressName); err == nil {
			break
		}
		log.Printf("  %-22s allowlist check, try %d: %v", t.label(), try+1, err)
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("allowlist check: %s through %s: %w", egressName, t.label(), err)
	}
	if t.p.name == "direct" {
		return nil
	}
	if err := tlsProbe(r.env.ca, t, deniedName); err == nil {
		return fmt.Errorf("allowlist check: %s, not on the allowlist, reached the origin through %s", deniedName, t.label())
	}
	return nil
}

// tlsProbe makes one TLS connection to name through the target (CONNECT
// for ztgate) and one GET.
func tlsProbe(caFile string, t *target, name string) error {
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	raw, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", t.port), 3*time.Second)
	if err != nil {
		return err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	if t.p.name == "ztgate" {
		fmt.Fprintf(raw, "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", name, originPort, name, originPort)
		br := bufio.NewReader(raw)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("CONNECT: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("CONNECT answered %s", resp.Status)
		}
		if br.Buffered() > 0 {
			return fmt.Errorf("CONNECT: unexpected bytes after the answer")
		}
	}
	c := tls.Client(raw, &tls.Config{ServerName: name, RootCAs: roots, MinVersion: tls.VersionTLS13})
	if err := c.Handshake(); err != nil {
		return err
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", name)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("origin answered %s", resp.Status)
	}
	return nil
}

func yamlList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = `"` + n + `"`
	}
	return "[" + strings.Join(q, ", ") + "]"
}
