package egress

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/ztgate/ztgate/egress/sni"
)

// handleProxyRequest serves connect and http listeners: optional mTLS,
// then one request head, bounded in size and time.
func (p *Proxy) handleProxyRequest(rt *snapshot, lr *listenerRT, c *conn, rec *record) {
	client := c.client
	deadline := time.Now().Add(rt.lim.HeaderTimeout)
	s := source{addr: rec.src.Addr()}
	if lr.tls != nil {
		tc := tls.Server(client, lr.tls)
		c.addCloser(tc)
		tc.SetDeadline(deadline)
		if err := tc.Handshake(); err != nil {
			p.deny(rec, ReasonClientTLSFailed, err)
			return
		}
		s.identity = spiffeID(tc.ConnectionState())
		rec.identity = s.identity
		client = tc
	}
	client.SetReadDeadline(deadline)
	limited := &io.LimitedReader{R: client, N: int64(rt.lim.MaxHeaderBytes)}
	hr := newHeadReader(limited)
	defer hr.release()
	req, err := http.ReadRequest(hr.br)
	if err != nil {
		p.reply(client, http.StatusBadRequest, rec)
		p.deny(rec, ReasonBadRequest, err)
		return
	}
	limited.N = math.MaxInt64 // the head is read; the rest is payload
	switch {
	case lr.mode == ModeConnect && req.Method == http.MethodConnect:
		p.handleConnect(rt, c, client, &hr, req, s, rec)
	case lr.mode == ModeHTTP && req.Method != http.MethodConnect:
		p.handleForward(rt, c, client, hr.br, req, s, rec)
	default:
		p.reply(client, http.StatusMethodNotAllowed, rec)
		p.deny(rec, ReasonUnsupportedProto, fmt.Errorf("%s request on a %s listener", req.Method, lr.mode))
	}
}

// headReader holds a pooled bufio.Reader for the request head (and, in
// a tunnel, the ClientHello behind it) for one connection. A tunnel
// releases it before it starts splicing, so long-lived tunnels hold no
// reader.
type headReader struct{ br *bufio.Reader }

var bufReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

func newHeadReader(r io.Reader) headReader {
	br := bufReaders.Get().(*bufio.Reader)
	br.Reset(r)
	return headReader{br: br}
}

// release returns the reader to the pool; the holder must not use it
// afterwards. Calling it again is a no-op.
func (hr *headReader) release() {
	if hr.br == nil {
		return
	}
	hr.br.Reset(nil)
	bufReaders.Put(hr.br)
	hr.br = nil
}

// deny records a deny decision with reason and an optional error detail.
func (p *Proxy) deny(rec *record, reason Reason, err error) {
	rec.dec.allow = false
	rec.dec.reason = reason
	if err != nil {
		rec.err = err
	}
	p.logDecision(rec)
}

// reply writes a short fixed response; the reason goes to the log only,
// the client gets the connection ID to quote.
func (p *Proxy) reply(w io.Writer, status int, rec *record) {
	body := fmt.Sprintf("%s (egress connection %d)\n", http.StatusText(status), rec.id)
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
}

// admitHTTP records the decision for an HTTP-speaking client (CONNECT or
// forward proxy) and, if allowed, resolves the target and guards every
// address. When it returns false it has answered the client (403, or 502
// when resolution failed) and logged the outcome.
func (p *Proxy) admitHTTP(rt *snapshot, client io.Writer, s source, t target, d decision, rec *record) ([]netip.Addr, bool) {
	rec.dec = d
	if !d.allow {
		p.reply(client, http.StatusForbidden, rec)
		p.logDecision(rec)
		return nil, false
	}
	addrs, reason := p.resolve(rt, s, t, rec)
	if reason == "" {
		addrs, reason = p.guard(rt, s, t, d, addrs)
	}
	if reason != "" {
		status := http.StatusForbidden
		if reason == ReasonDNSFailed {
			status = http.StatusBadGateway
		}
		p.reply(client, status, rec)
		p.deny(rec, reason, nil)
		return nil, false
	}
	return addrs, true
}

func (p *Proxy) handleConnect(rt *snapshot, c *conn, client net.Conn, hr *headReader, req *http.Request, s source, rec *record) {
	br := hr.br
	host, ip, port, err := parseTarget(req.RequestURI)
	if err != nil {
		p.reply(client, http.StatusBadRequest, rec)
		p.deny(rec, ReasonBadRequest, err)
		return
	}
	t := target{ip: ip, port: port, tls: true}
	rec.port = port
	if host != "" {
		rec.host = host
		if t.name, err = normalizeName(host); err != nil {
			p.reply(client, http.StatusBadRequest, rec)
			p.deny(rec, ReasonInvalidName, err)
			return
		}
		rec.host = t.name
	} else {
		rec.host = ip.String()
	}
	// A tunnel is TLS (and peeked) unless only a tls: false rule allows it.
	d := rt.decide(s, t)
	if !d.allow {
		plain := t
		plain.tls = false
		if dp := rt.decide(s, plain); dp.allow {
			d, t = dp, plain
		}
	}
	addrs, ok := p.admitHTTP(rt, client, s, t, d, rec)
	if !ok {
		return
	}
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		p.deny(rec, ReasonBadRequest, err)
		return
	}
	var pre []byte
	if t.tls {
		// The ClientHello must name the CONNECT host: a different SNI is
		// domain fronting, and the destination would see another name
		// than the one the policy allowed.
		client.SetReadDeadline(time.Now().Add(rt.helloTO))
		h, err := sni.Read(br, rt.helloMax)
		if reason := p.checkHello(rt, h, err, rec); reason != "" {
			p.deny(rec, reason, nil)
			return
		}
		switch {
		case !h.HasSNI && t.name != "" && !rt.noSNI:
			p.deny(rec, ReasonNoSNI, nil)
			return
		case h.HasSNI && rec.sni != t.name:
			p.deny(rec, ReasonSNIMismatch, fmt.Errorf("CONNECT %s but ClientHello names %q", rec.host, rec.sni))
			return
		}
		pre = h.Raw
	}
	client.SetReadDeadline(time.Time{})
	up, err := p.dial(rt, addrs, t.port, rec)
	if err != nil {
		p.deny(rec, ReasonDialFailed, err)
		return
	}
	p.logDecision(rec)
	pre = appendBuffered(pre, br)
	hr.release()
	p.splice(rt, c, client, up, pre, rec)
}

// checkHello maps a peek result to a deny reason, or "" when the hello
// may proceed; it sets rec.sni to the normalised server name.
func (p *Proxy) checkHello(rt *snapshot, h *sni.Hello, err error, rec *record) Reason {
	if err != nil {
		rec.err = err
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return ReasonPeekTimeout
		}
		return ReasonBadClientHello
	}
	if h.ECH && !rt.ech {
		rec.sni = h.ServerName
		return ReasonECH
	}
	if !h.HasSNI {
		return ""
	}
	rec.sni = h.ServerName
	if isIPLiteral(h.ServerName) {
		return ReasonIPSNI
	}
	n, err := normalizeName(h.ServerName)
	if err != nil {
		rec.err = err
		return ReasonInvalidName
	}
	rec.sni = n
	return ""
}

func isIPLiteral(s string) bool {
	_, err := netip.ParseAddr(strings.Trim(s, "[]"))
	return err == nil
}

// appendBuffered appends what the client sent beyond what was parsed.
func appendBuffered(pre []byte, br *bufio.Reader) []byte {
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		pre = append(pre, b...)
	}
	return pre
}

// spiffeID returns the SPIFFE ID (URI SAN) of the verified client leaf.
func spiffeID(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	for _, u := range cs.PeerCertificates[0].URIs {
		if u.Scheme == "spiffe" {
			return u.String()
		}
	}
	return ""
}
