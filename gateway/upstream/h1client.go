package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// h1Client is the fast path for the common exchange with an HTTP/1.1
// upstream: a request without a body, written and answered on the
// calling goroutine over a keep-alive connection from a pool per
// endpoint. http.Transport runs a reader and a writer goroutine per
// connection and hands every request, response and end of body between
// them and the caller over channels (four goroutine switches per
// request); here a request costs no switch beyond waiting for the
// socket. Requests with a body, upgrades and HTTP/2 upstreams go through
// http.Transport, which handles the concurrent body write and 100-continue.
//
// It keeps http.Transport's rules: at most maxIdle idle connections per
// endpoint, closed after idleTimeout; response headers limited to
// maxResponseHeaderBytes; header names and values validated before
// anything is written; a request that found its reused connection closed
// by the endpoint before any response byte is sent again on a new one
// (only bodyless idempotent requests take this path, so that is safe).
type h1Client struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle     int
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   map[string][]*h1Conn // by endpoint; most recently used last
	closed bool                 // retired: returned connections are closed
}

// maxResponseHeaderBytes bounds a response's status line and headers (as
// http.Transport.MaxResponseHeaderBytes in newTransport).
const maxResponseHeaderBytes = 1 << 20

// max1xx bounds the informational responses skipped before the final one.
const max1xx = 5

func newH1Client(dial func(ctx context.Context, network, addr string) (net.Conn, error), maxIdle int, idleTimeout time.Duration) *h1Client {
	return &h1Client{dial: dial, maxIdle: maxIdle, idleTimeout: idleTimeout, idle: map[string][]*h1Conn{}}
}

// fastPath reports whether the h1 client may carry r: no body, an
// idempotent method (so a stale connection can be retried), no upgrade.
func fastPath(r *http.Request, upgrade bool) bool {
	return r.Body == nil && !upgrade && idempotent(r.Method)
}

// errNotHTTP1Response is the cause when an endpoint answers a request
// that did not ask for an upgrade with 101, or sends too many 1xx.
var errBadInterim = errors.New("unexpected informational response")

// roundTrip sends req (no body) to addr and returns the response with
// its headers read. The body must be read to the end or closed; at the
// end the connection goes back to the pool. Cancelling ctx aborts the
// exchange, the body read included.
func (cl *h1Client) roundTrip(ctx context.Context, req *http.Request, addr string) (*http.Response, error) {
	if err := validHeaders(req.Header); err != nil {
		return nil, err
	}
	for {
		c, err := cl.get(ctx, addr)
		if err != nil {
			return nil, err
		}
		res, err := c.exchange(ctx, req)
		if err == nil {
			return res, nil
		}
		c.close()
		// The endpoint closed a pooled connection (idle timeout, restart)
		// before any response byte: send again on another connection.
		// Each turn uses up a pooled connection or dials, so this ends.
		if c.reused && c.got == 0 && ctx.Err() == nil && !isTimeout(err) {
			continue
		}
		return nil, err
	}
}

// writeRequest writes the head of a bodyless request as
// http.Request.Write does (same Host cleaning, same excluded headers,
// Content-Length: 0 for methods other than GET and HEAD), without its
// formatted printing and header sorting. validHeaders has checked the
// header fields.
func writeRequest(w *bufio.Writer, r *http.Request) error {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	host, err := httpguts.PunycodeHostPort(host)
	if err != nil {
		return err
	}
	if !httpguts.ValidHostHeader(host) {
		host = "" // as net/http: an altered Host would be a smuggling vector
	}
	host = removeZone(host)
	uri := r.URL.RequestURI()
	for i := 0; i < len(uri); i++ {
		if b := uri[i]; b < ' ' || b == 0x7f {
			return errors.New("control character in the request URI")
		}
	}
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(uri)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	for k, vs := range r.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		case "User-Agent":
			vs = vs[:min(len(vs), 1)] // one, and none when empty (http.Request.Write)
		}
		for _, v := range vs {
			v = textproto.TrimString(v)
			if k == "User-Agent" && v == "" {
				continue
			}
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
	if method != http.MethodGet && method != http.MethodHead {
		w.WriteString("Content-Length: 0\r\n")
	}
	_, err = w.WriteString("\r\n")
	return err
}

// removeZone drops an IPv6 zone from a Host (RFC 6874), as net/http does.
func removeZone(host string) string {
	if !strings.HasPrefix(host, "[") {
		return host
	}
	i := strings.LastIndex(host, "]")
	if i < 0 {
		return host
	}
	j := strings.LastIndex(host[:i], "%")
	if j < 0 {
		return host
	}
	return host[:j] + host[i:]
}

// validHeaders refuses what http.Transport refuses: a header name that
// is not a token or a value with control characters (CR, LF, NUL) would
// let a header edit or an authz-added value split the request.
func validHeaders(h http.Header) error {
	for k, vs := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("invalid header field name %q", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("invalid header field value for %q", k)
			}
		}
	}
	return nil
}

// get returns a pooled connection to addr that is still open and quiet,
// or dials a new one.
func (cl *h1Client) get(ctx context.Context, addr string) (*h1Conn, error) {
	cl.mu.Lock()
	for {
		list := cl.idle[addr]
		n := len(list)
		if n == 0 {
			break
		}
		c := list[n-1]
		list[n-1] = nil
		cl.idle[addr] = list[:n-1]
		c.pooled = false
		cl.mu.Unlock()
		c.timer.Stop()
		if c.quiet() {
			c.reused = true
			return c, nil
		}
		c.nc.Close()
		cl.mu.Lock()
	}
	cl.mu.Unlock()
	nc, err := cl.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &h1Conn{cl: cl, addr: addr, nc: nc}
	c.abortFn = c.abort // bound once: a method value allocates
	c.peekFn = func(fd uintptr) bool {
		c.peeked = peekWouldBlock(fd)
		return true
	}
	raw := nc
	if tc, ok := nc.(interface{ NetConn() net.Conn }); ok {
		raw, c.tls = tc.NetConn(), true
	}
	if sc, ok := raw.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	c.br = bufio.NewReaderSize(c, 4<<10)
	c.bw = bufio.NewWriterSize(nc, 4<<10)
	return c, nil
}

// put returns c to the pool, or closes it when the pool is full or
// retired.
func (cl *h1Client) put(c *h1Conn) {
	cl.mu.Lock()
	if cl.closed || len(cl.idle[c.addr]) >= cl.maxIdle {
		cl.mu.Unlock()
		c.close()
		return
	}
	// Armed before the connection is visible to get, which stops it.
	if c.timer == nil {
		c.timer = time.AfterFunc(cl.idleTimeout, c.expire)
	} else {
		c.timer.Reset(cl.idleTimeout)
	}
	c.pooled = true
	cl.idle[c.addr] = append(cl.idle[c.addr], c)
	cl.mu.Unlock()
}

// closeIdle closes the pooled connections; with retire, connections
// returned later are closed too.
func (cl *h1Client) closeIdle(retire bool) {
	cl.mu.Lock()
	var all []*h1Conn
	for addr, list := range cl.idle {
		for _, c := range list {
			c.pooled = false
			all = append(all, c)
		}
		delete(cl.idle, addr)
	}
	if retire {
		cl.closed = true
	}
	cl.mu.Unlock()
	for _, c := range all {
		c.timer.Stop()
		c.nc.Close()
	}
}

// h1Conn is one keep-alive connection, used by one request at a time.
type h1Conn struct {
	cl     *h1Client
	addr   string
	nc     net.Conn        // TCP or TLS
	raw    syscall.RawConn // the TCP socket, for quiet (nil: not checked)
	br     *bufio.Reader   // reads through Read (the header budget)
	bw     *bufio.Writer
	budget int64       // bytes the response headers may still take
	got    int64       // bytes read in this exchange
	stop   func() bool // unregisters the abort on cancel
	// Funcs bound once per connection (closures allocate).
	abortFn func()
	peekFn  func(fd uintptr) bool
	peeked  bool
	timer   *time.Timer // idle timeout while pooled
	pooled  bool        // in cl.idle (guarded by cl.mu)
	reused  bool
	tls     bool // nc is a *tls.Conn over the raw socket
}

// Read feeds br, counting against the header budget.
func (c *h1Conn) Read(p []byte) (int, error) {
	if c.budget <= 0 {
		return 0, fmt.Errorf("response headers exceed %d bytes", maxResponseHeaderBytes)
	}
	if int64(len(p)) > c.budget {
		p = p[:c.budget]
	}
	n, err := c.nc.Read(p)
	c.budget -= int64(n)
	c.got += int64(n)
	return n, err
}

var aLongTimeAgo = time.Unix(1, 0)

// abort makes the blocked read or write of the exchange fail at once.
func (c *h1Conn) abort() { c.nc.SetDeadline(aLongTimeAgo) }

func (c *h1Conn) close() {
	c.nc.Close()
}

// expire is the idle timer: close c if it is still pooled.
func (c *h1Conn) expire() {
	cl := c.cl
	cl.mu.Lock()
	if !c.pooled {
		cl.mu.Unlock()
		return
	}
	c.pooled = false
	list := cl.idle[c.addr]
	for i, x := range list {
		if x == c {
			cl.idle[c.addr] = append(list[:i], list[i+1:]...)
			list[len(list)-1] = nil
			break
		}
	}
	cl.mu.Unlock()
	c.nc.Close()
}

// exchange writes req and reads the final response's headers.
func (c *h1Conn) exchange(ctx context.Context, req *http.Request) (*http.Response, error) {
	c.got = 0
	c.stop = context.AfterFunc(ctx, c.abortFn)
	if err := writeRequest(c.bw, req); err != nil {
		c.stop()
		return nil, err
	}
	if err := c.bw.Flush(); err != nil {
		c.stop()
		return nil, err
	}
	for n := 0; ; n++ {
		c.budget = maxResponseHeaderBytes
		res, err := http.ReadResponse(c.br, req)
		if err != nil {
			c.stop()
			return nil, err
		}
		if res.StatusCode >= 200 {
			c.budget = math.MaxInt64
			res.Body = &h1Body{rc: res.Body, c: c, keep: !res.Close}
			return res, nil
		}
		// 1xx: skip (http.Transport does too), but a 101 answers an
		// upgrade this path never asks for.
		if res.StatusCode == http.StatusSwitchingProtocols || n >= max1xx {
			c.stop()
			return nil, fmt.Errorf("%w %d", errBadInterim, res.StatusCode)
		}
	}
}

// quiet reports whether a pooled connection may carry a request: nothing
// is buffered and the socket has neither data nor EOF waiting (an
// endpoint may close an idle connection, or answer on it with a 408,
// while it sits in the pool; http.Transport notices with a reader
// goroutine per connection, this path with one non-blocking peek).
func (c *h1Conn) quiet() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	if c.raw == nil {
		return true
	}
	c.peeked = false
	err := c.raw.Read(c.peekFn)
	return err == nil && c.peeked
}

// h1Body is a response body from the h1 client. At EOF its connection
// goes back to the pool; closed early or broken, the connection is
// closed (what is left of the body is in its way).
type h1Body struct {
	rc   io.ReadCloser
	c    *h1Conn
	keep bool // the response allows reuse (no Connection: close)
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.c == nil {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.release(err == io.EOF)
	}
	return n, err
}

func (b *h1Body) Close() error {
	if b.c != nil {
		b.release(false)
	}
	return nil
}

func (b *h1Body) release(atEOF bool) {
	c := b.c
	b.c = nil
	// stop is false when the abort already ran: the deadline is set.
	if c.stop() && atEOF && b.keep && c.br.Buffered() == 0 && !c.tlsBuffered() {
		c.reused = false
		c.cl.put(c)
		return
	}
	c.close()
}

// tlsBuffered reports whether a TLS connection holds bytes past the
// response (a record read along with the last one). They are out of
// sight of quiet, which looks at the socket; with the read deadline in
// the past, a read returns them or fails before any system call.
func (c *h1Conn) tlsBuffered() bool {
	if !c.tls {
		return false
	}
	c.nc.SetReadDeadline(aLongTimeAgo)
	_, err := c.br.Peek(1)
	c.nc.SetReadDeadline(time.Time{})
	return err == nil || !isTimeout(err)
}
