package egress

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// hopHeaders are removed before a request is forwarded (RFC 9110 7.6.1),
// together with the Proxy-* credentials meant for this proxy.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authorization",
	"Proxy-Authenticate", "Te", "Trailer", "Upgrade",
}

// handleForward proxies one plain-HTTP absolute-URI request, decided by
// its host and port. One request per client connection: the request is
// sent with Connection: close and the response is streamed back as is.
func (p *Proxy) handleForward(rt *snapshot, c *conn, client net.Conn, br *bufio.Reader, req *http.Request, s source, rec *record) {
	u := req.URL
	if u.Scheme != "http" || u.Host == "" {
		p.reply(client, http.StatusBadRequest, rec)
		p.deny(rec, ReasonBadRequest, fmt.Errorf("request target %q is not an absolute http:// URL (use CONNECT for https)", truncate(req.RequestURI, 200)))
		return
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "80")
	}
	host, ip, port, err := parseTarget(hostport)
	if err != nil {
		p.reply(client, http.StatusBadRequest, rec)
		p.deny(rec, ReasonBadRequest, err)
		return
	}
	t := target{ip: ip, port: port, tls: false}
	rec.port = port
	rec.host = ip.String()
	if host != "" {
		rec.host = host
		if t.name, err = normalizeName(host); err != nil {
			p.reply(client, http.StatusBadRequest, rec)
			p.deny(rec, ReasonInvalidName, err)
			return
		}
		rec.host = t.name
	}
	d := rt.decide(s, t)
	addrs, ok := p.admitHTTP(rt, client, s, t, d, rec)
	if !ok {
		return
	}
	up, err := p.dial(rt, addrs, port, rec)
	if err != nil {
		p.reply(client, http.StatusBadGateway, rec)
		p.deny(rec, ReasonDialFailed, err)
		return
	}
	c.addCloser(up)
	p.logDecision(rec)

	for _, f := range req.Header.Values("Connection") {
		for _, h := range strings.Split(f, ",") {
			req.Header.Del(strings.TrimSpace(h))
		}
	}
	for _, h := range hopHeaders {
		req.Header.Del(h)
	}
	req.Close = true
	req.RequestURI = ""
	// RFC 9112 3.2.2: a proxy replaces Host with the request target's
	// authority, so the origin sees the name the policy decided on.
	req.Host = u.Host
	client.SetReadDeadline(time.Time{})
	stop := watch(c, client, up, rt.lim.IdleTimeout, rt.lim.MaxDuration)
	defer stop()

	cw := &countWriter{w: up}
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, err := io.Copy(client, up)
		rec.down = n
		if err != nil {
			c.closeAll()
		}
	}()
	if err := req.Write(cw); err != nil {
		rec.err = err
		c.closeAll()
	}
	rec.up = cw.n
	<-done
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..." + strconv.Itoa(len(s)-n) + " more bytes"
}
