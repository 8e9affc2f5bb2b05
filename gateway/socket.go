package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// tcpSocket is one listening TCP socket. It outlives config snapshots:
// a reload that keeps the address keeps the socket, and only the
// http.Server it hands connections to is replaced. Accepted connections
// are handshaken here (with a timeout, counted), then handed to whichever
// connQueue is current.
type tcpSocket struct {
	addr string
	ln   net.Listener
	log  *slog.Logger
	m    *Metrics

	// Settings of the current snapshot, read per connection.
	name      atomic.Pointer[string]
	tlsConf   atomic.Pointer[tls.Config] // nil for plain HTTP
	maxConns  atomic.Int64
	handshake atomic.Int64 // time.Duration
	target    atomic.Pointer[connQueue]

	active atomic.Int64
	wg     sync.WaitGroup // accept loop + handshakes in progress
	closed atomic.Bool
}

func listenTCP(addr string, log *slog.Logger, m *Metrics) (*tcpSocket, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &tcpSocket{addr: addr, ln: ln, log: log, m: m}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// configure points the socket at a new snapshot's settings and queue.
func (s *tcpSocket) configure(name string, tlsConf *tls.Config, maxConns int, handshake time.Duration, q *connQueue) {
	s.name.Store(&name)
	s.tlsConf.Store(tlsConf)
	s.maxConns.Store(int64(maxConns))
	s.handshake.Store(int64(handshake))
	s.target.Store(q)
}

func (s *tcpSocket) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary errors (EMFILE...): back off as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "address", s.addr, "error", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if limit := s.maxConns.Load(); limit > 0 && s.active.Load() >= limit {
			s.m.connRejected.WithLabelValues(*s.name.Load()).Inc()
			c.Close()
			continue
		}
		s.active.Add(1)
		s.m.connActive.WithLabelValues(*s.name.Load()).Inc()
		s.wg.Add(1)
		go s.handle(c)
	}
}

func (s *tcpSocket) handle(raw net.Conn) {
	defer s.wg.Done()
	name := *s.name.Load()
	c := &trackedConn{Conn: raw, release: func() {
		s.active.Add(-1)
		s.m.connActive.WithLabelValues(name).Dec()
	}}
	var conn net.Conn = c
	if tc := s.tlsConf.Load(); tc != nil {
		tlsConn := tls.Server(c, tc)
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.handshake.Load()))
		err := tlsConn.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.m.handshakes.WithLabelValues(name, "failure", "").Inc()
			s.log.Debug("tls handshake failed", "listener", name, "client", raw.RemoteAddr().String(), "error", err)
			tlsConn.Close()
			return
		}
		s.m.handshakes.WithLabelValues(name, "success", tlsVersionName(tlsConn.ConnectionState().Version)).Inc()
		conn = tlsConn
	}
	// Hand over to the current server; if it was just retired, retry
	// with its successor.
	for i := 0; i < 3; i++ {
		if q := s.target.Load(); q != nil && q.push(conn) {
			return
		}
	}
	conn.Close()
}

// close stops accepting. Connections already handed to servers are the
// servers' to drain.
func (s *tcpSocket) close() {
	s.closed.Store(true)
	s.ln.Close()
	s.wg.Wait()
}

// trackedConn releases its connection slot exactly once on Close.
type trackedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *trackedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// connQueue is a net.Listener fed by a tcpSocket, one per http.Server.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// push hands c to the server; false if the queue is closed.
func (q *connQueue) push(c net.Conn) bool {
	select {
	case <-q.done:
		return false
	default:
	}
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "1.3"
	case tls.VersionTLS12:
		return "1.2"
	default:
		return "other"
	}
}
