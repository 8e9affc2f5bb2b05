package gateway

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// h3Server is the QUIC socket and HTTP/3 server of one listener address.
// Like a TCP socket, it survives reloads that keep the address.
type h3Server struct {
	pc   net.PacketConn
	ln   *quic.EarlyListener
	srv  *http3.Server
	name atomic.Pointer[string]
	done chan struct{}
}

func (s *Server) listenH3(addr string) (*h3Server, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	hs := &h3Server{pc: pc, done: make(chan struct{})}
	empty := ""
	hs.name.Store(&empty)
	current := func() string { return *hs.name.Load() }
	tc := http3.ConfigureTLSConfig(s.stableTLS(current))
	qc := &quic.Config{
		HandshakeIdleTimeout: 10 * time.Second,
		MaxIdleTimeout:       120 * time.Second,
		MaxIncomingStreams:   250,
		Allow0RTT:            false, // 0-RTT requests are replayable
	}
	ln, err := quic.ListenEarly(pc, tc, qc)
	if err != nil {
		pc.Close()
		return nil, err
	}
	hs.ln = ln
	hs.srv = &http3.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			(&listenerHandler{s: s, name: current(), h3: true}).ServeHTTP(w, r)
		}),
		MaxHeaderBytes: 64 << 10,
		IdleTimeout:    120 * time.Second,
		Logger:         s.log.With("protocol", "h3"),
	}
	go func() {
		defer close(hs.done)
		hs.srv.ServeListener(ln)
	}()
	return hs, nil
}

func (hs *h3Server) close(ctx context.Context) {
	if err := hs.srv.Shutdown(ctx); err != nil {
		hs.srv.Close()
	}
	hs.ln.Close()
	<-hs.done
	hs.pc.Close()
}
