// Package loadgen is the TLS handshake load used by accel.Bench and the
// hsbench tool: a server that completes a handshake and closes, and
// clients that make full handshakes (no resumption) in a bounded loop.
package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Server accepts TLS connections, completes each handshake, answers one
// HTTP/1.1 request with a 2-byte body and closes: the same work as the
// nginx, haproxy and caddy peers in the baseline measurements.
type Server struct {
	ln         net.Listener
	cfg        *tls.Config
	Handshakes atomic.Int64
	Failures   atomic.Int64
	wg         sync.WaitGroup
}

// Serve starts serving on ln until Close.
func Serve(ln net.Listener, cfg *tls.Config) *Server {
	s := &Server{ln: ln, cfg: cfg}
	s.wg.Add(1)
	go s.accept()
	return s
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			tc := tls.Server(c, s.cfg)
			if err := tc.Handshake(); err != nil {
				s.Failures.Add(1)
				return
			}
			s.Handshakes.Add(1)
			buf := make([]byte, 4096)
			if _, err := tc.Read(buf); err == nil {
				tc.Write(response)
			}
		}()
	}
}

var (
	response = []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	request  = []byte("GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
)

// Close stops accepting and waits for open connections.
func (s *Server) Close() {
	s.ln.Close()
	s.wg.Wait()
}

// Result of a client run.
type Result struct {
	Handshakes int64
	Resumed    int64
	Failures   int64
	FirstError error
	Elapsed    time.Duration
}

// Rate is handshakes per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Handshakes) / r.Elapsed.Seconds()
}

// Run makes full handshakes to addr from conc goroutines until d passes
// or ctx ends. Each connection is new, sessions are never resumed, and
// the client sends one GET and reads the whole response.
//
// If cfg has a ClientSessionCache, clients resume sessions with it and
// Result.Resumed counts the handshakes that did.
func Run(ctx context.Context, addr string, cfg *tls.Config, conc int, d time.Duration) Result {
	cfg = cfg.Clone()
	var resumed atomic.Int64
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	deadline, _ := ctx.Deadline()
	// live is false once the run is over: a dial or read cut short by
	// the run's own deadline is not a failure.
	live := func() bool { return ctx.Err() == nil && time.Now().Before(deadline) }
	var ok, fail atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for ctx.Err() == nil {
				c, err := dialer.DialContext(ctx, "tcp", addr)
				if err != nil {
					if live() && fail.Add(1) == 1 {
						firstErr.Store(err)
					}
					continue
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := tls.Client(c, cfg)
				_, err = tc.Write(request)
				n := 0
				for err == nil {
					var m int
					m, err = tc.Read(buf)
					n += m
				}
				if errors.Is(err, io.EOF) && n > 0 {
					err = nil
				}
				c.Close()
				switch {
				case err == nil:
					ok.Add(1)
					if tc.ConnectionState().DidResume {
						resumed.Add(1)
					}
				case live():
					if fail.Add(1) == 1 {
						firstErr.Store(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	r := Result{Handshakes: ok.Load(), Resumed: resumed.Load(), Failures: fail.Load(), Elapsed: time.Since(start)}
	if e, ok := firstErr.Load().(error); ok {
		r.FirstError = e
	}
	return r
}
