package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// rawUpstream is a loopback TCP server whose connections are handled by
// serve, for answers no net/http server would give (unsolicited
// responses, oversized headers, a close before the response). It counts
// the connections it accepted.
type rawUpstream struct {
	ln    net.Listener
	mu    sync.Mutex
	conns int
	wg    sync.WaitGroup
}

func newRawUpstream(t *testing.T, serve func(n int, c net.Conn, br *bufio.Reader)) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln}
	var open []net.Conn
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns++
			n := u.conns
			open = append(open, c)
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer c.Close()
				serve(n, c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for _, c := range open {
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

func (u *rawUpstream) addr() string { return u.ln.Addr().String() }

func (u *rawUpstream) accepted() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.conns
}

// readHead reads one request head; false at EOF or on garbage.
func readHead(br *bufio.Reader) (string, http.Header, bool) {
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return "", nil, false
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return "", nil, false
	}
	return line, http.Header(h), true
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// proxyOnce sends one request through p and returns the status and body
// the client got, and the error Proxy returned.
func proxyOnce(t *testing.T, p *Pool, r *http.Request, info *RequestInfo) (int, string, error) {
	t.Helper()
	if info == nil {
		info = &RequestInfo{RequestID: "req-1", Proto: "https"}
	}
	w := httptest.NewRecorder()
	err := p.Proxy(w, r, info)
	if err != nil {
		WriteError(w, err, info.RequestID)
	}
	return w.Code, w.Body.String(), err
}

func TestH1RequestHead(t *testing.T) {
	heads := make(chan []string, 4)
	up := newRawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			line, h, ok := readHead(br)
			if !ok {
				return
			}
			lines := []string{line}
			for k, vs := range h {
				for _, v := range vs {
					lines = append(lines, k+": "+v)
				}
			}
			heads <- lines
			io.WriteString(c, okResponse)
		}
	})
	p := newPool(t, parseUpstream(t, "raw", []string{up.addr()}, "    retries: {attempts: 0}\n"), Deps{})
	for _, tc := range []struct {
		name, method string
		header       http.Header
		want, absent []string
	}{
		{"get", "GET", http.Header{"X-Pad": {"  padded "}, "Accept-Encoding": {"br"}},
			[]string{"GET /path?q=1 HTTP/1.1", "Host: front.test", "X-Pad: padded", "Accept-Encoding: br", "X-Request-Id: req-1"},
			[]string{"User-Agent", "Content-Length", "Accept-Encoding: gzip"}},
		{"delete has a zero length", "DELETE", http.Header{"User-Agent": {"curl/8"}},
			[]string{"DELETE /path?q=1 HTTP/1.1", "Content-Length: 0", "User-Agent: curl/8"}, nil},
		{"head", "HEAD", nil, []string{"HEAD /path?q=1 HTTP/1.1"}, []string{"Content-Length"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "https://front.test/path?q=1", nil)
			r.Header = tc.header
			if r.Header == nil {
				r.Header = http.Header{}
			}
			if code, _, err := proxyOnce(t, p, r, nil); code != 200 {
				t.Fatalf("status %d: %v", code, err)
			}
			got := strings.Join(<-heads, "\n")
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("request head lacks %q:\n%s", w, got)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(got, a) {
					t.Errorf("request head has %q:\n%s", a, got)
				}
			}
		})
	}
	if n := up.accepted(); n != 1 {
		t.Fatalf("%d connections for 3 sequential requests, want 1 (keep-alive)", n)
	}
}

// TestH1PooledConnectionChecks: a pooled connection the endpoint closed,
// or answered on while idle, is not used for the next request.
func TestH1PooledConnectionChecks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after string // written by the upstream after the first response, then it closes
		later bool   // written once the connection sits in the pool (else with the response)
	}{
		{"closed while idle", "", true},
		{"unsolicited 408 while idle", "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", true},
		{"extra bytes after the response", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pooled, sent, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
			up := newRawUpstream(t, func(n int, c net.Conn, br *bufio.Reader) {
				if _, _, ok := readHead(br); !ok {
					return
				}
				if n == 1 {
					if tc.later {
						io.WriteString(c, okResponse)
						<-pooled
						io.WriteString(c, tc.after)
					} else {
						io.WriteString(c, okResponse+tc.after)
					}
					c.(*net.TCPConn).CloseWrite()
					close(sent)
					io.Copy(io.Discard, br) // until the proxy closes its side
					close(done)
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
				readHead(br)
			})
			p := newPool(t, parseUpstream(t, "raw", []string{up.addr()}, "    retries: {attempts: 0}\n"), Deps{})
			r := httptest.NewRequest("GET", "https://front.test/", nil)
			if code, body, err := proxyOnce(t, p, r, nil); code != 200 || body != "ok" {
				t.Fatalf("first: %d %q %v", code, body, err)
			}
			close(pooled)
			<-sent
			// The bytes or the EOF wait in the socket of the pooled
			// connection: the next request must not read them as its
			// answer, nor fail.
			code, body, err := proxyOnce(t, p, r, nil)
			if code != 200 || body != "fresh" {
				t.Fatalf("second: %d %q %v, want the answer of a new connection", code, body, err)
			}
			<-done
			if n := up.accepted(); n != 2 {
				t.Fatalf("%d connections, want 2", n)
			}
		})
	}
}

// TestH1StaleConnectionRetried: the endpoint closes a reused connection
// after reading the request, without a byte of response (the keep-alive
// race): the request is sent again on a new connection. On a new
// connection the same failure is an error.
func TestH1StaleConnectionRetried(t *testing.T) {
	up := newRawUpstream(t, func(n int, c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			if _, _, ok := readHead(br); !ok {
				return
			}
			if n == 1 && i == 1 || n == 3 {
				return // close without answering
			}
			io.WriteString(c, okResponse)
		}
	})
	p := newPool(t, parseUpstream(t, "raw", []string{up.addr()}, "    retries: {attempts: 0}\n"), Deps{})
	r := httptest.NewRequest("GET", "https://front.test/", nil)
	for i := 0; i < 2; i++ {
		if code, body, err := proxyOnce(t, p, r, nil); code != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q %v", i, code, body, err)
		}
	}
	if n := up.accepted(); n != 2 {
		t.Fatalf("%d connections, want 2 (the second request retried once)", n)
	}
	// Connection 2 is pooled and answers; make it go away so the next
	// request dials connection 3, which closes without an answer.
	p.gen.Load().closeIdle()
	code, _, err := proxyOnce(t, p, r, nil)
	var e *Error
	if code != 502 || !errors.As(err, &e) || e.Kind != KindReset {
		t.Fatalf("fresh connection closed without a response: %d %v, want 502 reset", code, err)
	}
	if n := up.accepted(); n != 3 {
		t.Fatalf("%d connections, want 3 (no retry on a new connection)", n)
	}
}

func TestH1ResponseHandling(t *testing.T) {
	big := "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", maxResponseHeaderBytes) + "\r\nContent-Length: 2\r\n\r\nok"
	for _, tc := range []struct {
		name      string
		response  string // to each request
		wantCode  int
		wantBody  string
		wantKind  Kind
		wantConns int // for three requests
	}{
		{"keep-alive", okResponse, 200, "ok", 0, 1},
		{"interim responses skipped", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + okResponse, 200, "ok", 0, 1},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 200, "ok", 0, 3},
		{"HTTP/1.0 without keep-alive", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, "ok", 0, 3},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n", 200, "ok", 0, 1},
		{"no status body", "HTTP/1.1 204 No Content\r\n\r\n", 204, "", 0, 1},
		{"101 without an upgrade", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", 502, "", KindReset, 3},
		{"too many interim responses", strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", max1xx+1) + okResponse, 502, "", KindReset, 3},
		{"headers over the limit", big, 502, "", KindReset, 3},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", 502, "", KindReset, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newRawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
				for {
					if _, _, ok := readHead(br); !ok {
						return
					}
					if _, err := io.WriteString(c, tc.response); err != nil {
						return
					}
				}
			})
			// Response bodies without a length end at the close.
			p := newPool(t, parseUpstream(t, "raw", []string{up.addr()}, "    retries: {attempts: 0}\n"), Deps{})
			for i := 0; i < 3; i++ {
				r := httptest.NewRequest("GET", "https://front.test/", nil)
				code, body, err := proxyOnce(t, p, r, nil)
				if code != tc.wantCode || tc.wantCode == 200 && body != tc.wantBody {
					t.Fatalf("request %d: %d %q %v, want %d %q", i, code, body, err, tc.wantCode, tc.wantBody)
				}
				var e *Error
				if tc.wantKind != 0 && (!errors.As(err, &e) || e.Kind != tc.wantKind) {
					t.Fatalf("request %d: error %v, want %v", i, err, tc.wantKind)
				}
			}
			if n := up.accepted(); n != tc.wantConns {
				t.Fatalf("%d connections for 3 requests, want %d", n, tc.wantConns)
			}
		})
	}
}

// TestH1InvalidHeaderRefused: a header value with CR LF (say from a
// header edit fed by a claim) must not split the upstream request.
func TestH1InvalidHeaderRefused(t *testing.T) {
	up := newRawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, _, ok := readHead(br); !ok {
				return
			}
			io.WriteString(c, okResponse)
		}
	})
	p := newPool(t, parseUpstream(t, "raw", []string{up.addr()}, "    retries: {attempts: 0}\n"), Deps{})
	for _, x := range []Header{{"X-User", "a\r\nX-Admin: 1"}, {"X-User", "a\nb"}, {"Bad Name", "v"}, {"X-User", "a\x00b"}} {
		r := httptest.NewRequest("GET", "https://front.test/", nil)
		info := &RequestInfo{RequestID: "req-1", Proto: "https", Extra: []Header{x}}
		if code, _, err := proxyOnce(t, p, r, info); code != 502 || err == nil {
			t.Fatalf("%q: %q: got %d %v, want 502", x.Name, x.Value, code, err)
		}
	}
	if n := up.accepted(); n != 0 {
		t.Fatalf("the upstream saw %d connections; nothing should have been sent", n)
	}
}

// TestH1EarlyCloseAndIdleLimits: a body closed before its end takes its
// connection down; at most max_idle_conns connections stay pooled per
// endpoint, and idle_conn_timeout closes them.
func TestH1EarlyCloseAndIdleLimits(t *testing.T) {
	closed := make(chan int, 16)
	arrived := make(chan int, 16)
	gate := make(chan struct{}, 16) // one token per response
	up := newRawUpstream(t, func(n int, c net.Conn, br *bufio.Reader) {
		defer func() { closed <- n }()
		for {
			if _, _, ok := readHead(br); !ok {
				return
			}
			arrived <- n
			<-gate
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"); err != nil {
				return
			}
		}
	})
	u := parseUpstream(t, "raw", []string{up.addr()}, "    max_idle_conns: 1\n    idle_conn_timeout: 1h\n")
	p := newPool(t, u, Deps{})
	g := p.gen.Load()
	r := httptest.NewRequest("GET", "http://front.test/", nil)

	// Body closed early: the connection is closed, not pooled.
	gate <- struct{}{}
	res, err := g.h1.roundTrip(context.Background(), outboundFor(p, r, up.addr()), up.addr())
	if err != nil {
		t.Fatal(err)
	}
	<-arrived
	buf := make([]byte, 2)
	io.ReadFull(res.Body, buf)
	res.Body.Close()
	if n := <-closed; n != 1 {
		t.Fatalf("connection %d closed, want 1", n)
	}

	// Two in flight at once on two connections, both returned: one
	// stays pooled (max_idle_conns: 1), the other is closed.
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := g.h1.roundTrip(context.Background(), outboundFor(p, r, up.addr()), up.addr())
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}()
	}
	<-arrived
	<-arrived
	gate <- struct{}{}
	gate <- struct{}{}
	wg.Wait()
	first := <-closed
	if n := g.h1.idleCount(up.addr()); n != 1 {
		t.Fatalf("%d pooled connections, want 1", n)
	}
	// The idle timeout closes the pooled one (fired by hand: nothing
	// here depends on timing).
	g.h1.mu.Lock()
	c := g.h1.idle[up.addr()][0]
	g.h1.mu.Unlock()
	c.expire()
	if second := <-closed; second == first || g.h1.idleCount(up.addr()) != 0 {
		t.Fatalf("idle expiry: closed %d after %d, %d still pooled", second, first, g.h1.idleCount(up.addr()))
	}
}

// outboundFor builds the request Proxy would send to addr.
func outboundFor(p *Pool, r *http.Request, addr string) *http.Request {
	out := p.outbound(r.Context(), r, &RequestInfo{Proto: "http"})
	u := *out.URL
	u.Scheme, u.Host = "http", addr
	out.URL = &u
	return out
}

func (cl *h1Client) idleCount(addr string) int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return len(cl.idle[addr])
}

// TestH1ClientGoneAborts: the client leaving while the upstream thinks
// aborts the exchange at once, and the connection is not reused.
func TestH1ClientGoneAborts(t *testing.T) {
	got := make(chan struct{})
	up := newRawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, _, ok := readHead(br); !ok {
			return
		}
		close(got)
		io.Copy(io.Discard, br) // never answers; ends when the proxy closes
	})
	p := newPool(t, parseUpstream(t, "raw", []string{up.addr()}, "    response_timeout: 1h\n"), Deps{})
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequest("GET", "https://front.test/", nil).WithContext(ctx)
	go func() {
		<-got
		cancel()
	}()
	_, _, err := proxyOnce(t, p, r, nil)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindClientGone {
		t.Fatalf("error %v, want client_gone", err)
	}
	if n := p.gen.Load().h1.idleCount(up.addr()); n != 0 {
		t.Fatalf("%d pooled connections after an aborted exchange", n)
	}
}

// batchConn holds writes back while batch is set, so two TLS records
// leave in one segment and the reader gets them in one read.
type batchConn struct {
	net.Conn
	batch bool
	buf   []byte
}

func (b *batchConn) Write(p []byte) (int, error) {
	if b.batch {
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

func (b *batchConn) flush() error {
	b.batch = false
	_, err := b.Conn.Write(b.buf)
	b.buf = nil
	return err
}

// TestH1TLSBufferedRecord: over TLS, bytes after the response may sit
// in crypto/tls's buffer, where no look at the socket sees them; the
// connection must not carry the next request.
func TestH1TLSBufferedRecord(t *testing.T) {
	cert := selfSigned(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600)
	conf := &tls.Config{Certificates: []tls.Certificate{cert}}
	up := newRawUpstream(t, func(n int, c net.Conn, _ *bufio.Reader) {
		bc := &batchConn{Conn: c}
		tc := tls.Server(bc, conf)
		br := bufio.NewReader(tc)
		for {
			if _, _, ok := readHead(br); !ok {
				return
			}
			if n > 1 {
				io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
				continue
			}
			bc.batch = true
			io.WriteString(tc, okResponse)
			io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
			if bc.flush() != nil {
				return
			}
		}
	})
	u := parseUpstream(t, "tls", []string{up.addr()}, "    tls: {ca_file: "+ca+"}\n    retries: {attempts: 0}\n")
	p := newPool(t, u, Deps{})
	r := httptest.NewRequest("GET", "https://front.test/", nil)
	if code, body, err := proxyOnce(t, p, r, nil); code != 200 || body != "ok" {
		t.Fatalf("first: %d %q %v", code, body, err)
	}
	if code, body, err := proxyOnce(t, p, r, nil); code != 200 || body != "fresh" {
		t.Fatalf("second: %d %q %v, want the answer of a new connection", code, body, err)
	}
}
