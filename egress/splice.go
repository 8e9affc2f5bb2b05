package egress

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

type closeWriter interface{ CloseWrite() error }

// splice copies both ways until both directions end: one goroutine per
// direction (the caller's and one more). Between two *net.TCPConn,
// io.Copy uses splice(2) on Linux, so bulk bytes stay in the kernel. pre
// is written to the destination first (the peeked ClientHello and
// anything the client sent before the splice started), so what follows
// is a copy between the raw sockets.
func (p *Proxy) splice(rt *snapshot, c *conn, client net.Conn, up *net.TCPConn, pre []byte, rec *record) {
	c.addCloser(up)
	if len(pre) > 0 {
		up.SetWriteDeadline(time.Now().Add(rt.lim.DialTimeout))
		n, err := up.Write(pre)
		rec.up += int64(n)
		if err != nil {
			rec.err = err
			return
		}
		up.SetWriteDeadline(time.Time{})
	}
	stop := watch(c, client, up, rt.lim.IdleTimeout, rt.lim.MaxDuration)
	defer stop()

	// A direction that ends cleanly passes the half-close on (FIN), so
	// the other side can finish; the last one to end skips that, as both
	// sockets are closed right after.
	var running atomic.Int32
	running.Store(2)
	var wg sync.WaitGroup
	var upN int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, err := copyConn(up, client)
		upN = n
		if err != nil {
			c.closeAll()
			return
		}
		if running.Add(-1) > 0 {
			up.CloseWrite()
		}
	}()
	n, err := copyConn(client, up)
	rec.down += n
	if err != nil {
		c.closeAll()
	} else if cw, ok := client.(closeWriter); ok && running.Add(-1) > 0 {
		cw.CloseWrite()
	}
	wg.Wait()
	rec.up += upN
}

// spliceAfter is how many bytes a direction copies through a user-space
// buffer before it switches to io.Copy (splice(2) between TCP sockets).
// Most connections are short (a handshake and a small exchange); for
// them a pooled buffer costs less than setting up splice pipes, while
// bulk transfers still run zero-copy after the first bytes.
const spliceAfter = 64 << 10

// copyBufs holds the buffers of the first bytes: 16 KiB (a TLS record),
// one per direction in use, returned as soon as the direction moves to
// splice(2) or ends.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// copyConn copies src to dst until EOF: the first spliceAfter bytes
// through a pooled buffer, the rest with io.Copy, which splices between
// two *net.TCPConn (the connections are passed as they are, never
// wrapped, so io.Copy finds (*TCPConn).ReadFrom).
func copyConn(dst, src net.Conn) (int64, error) {
	n, done, err := copyFirst(dst, src)
	if done {
		return n, err
	}
	m, err := io.Copy(dst, src)
	return n + m, err
}

// copyFirst copies up to spliceAfter bytes; done reports that src ended
// (or a side failed) within them.
func copyFirst(dst, src net.Conn) (n int64, done bool, err error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for n < spliceAfter {
		k, rerr := src.Read(buf)
		if k > 0 {
			w, werr := dst.Write(buf[:k])
			n += int64(w)
			if werr != nil {
				return n, true, werr
			}
		}
		if rerr == io.EOF {
			return n, true, nil
		}
		if rerr != nil {
			return n, true, rerr
		}
	}
	return n, false, nil
}

// watch closes the connection when neither side has sent data for idle,
// or when it has lasted maxDuration: one timer for both. The idle check
// asks the kernel (TCP_INFO) when data last arrived on each socket, so
// the copy loops stay zero-copy with no per-read bookkeeping.
func watch(c *conn, a, b net.Conn, idle, maxDuration time.Duration) (stop func()) {
	w := &watcher{c: c, a: a, b: b, idle: idle, end: time.Now().Add(maxDuration)}
	w.mu.Lock()
	w.t = time.AfterFunc(min(idle, maxDuration), w.check)
	w.mu.Unlock()
	return w.stop
}

type watcher struct {
	c       *conn
	a, b    net.Conn
	idle    time.Duration
	end     time.Time
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func (w *watcher) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	left := time.Until(w.end)
	if left <= 0 {
		w.c.closeAll()
		return
	}
	next := left
	la, oka := lastRecv(w.a)
	lb, okb := lastRecv(w.b)
	if oka && okb { // not TCP: only max_duration applies
		since := min(la, lb)
		if since >= w.idle {
			w.c.closeAll()
			return
		}
		next = min(next, w.idle-since)
	}
	w.t.Reset(next)
}

func (w *watcher) stop() {
	w.mu.Lock()
	w.stopped = true
	w.t.Stop()
	w.mu.Unlock()
}

// lastRecv returns how long ago the socket last received data.
func lastRecv(c net.Conn) (time.Duration, bool) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || gerr != nil {
		return 0, false
	}
	return time.Duration(info.Last_data_recv) * time.Millisecond, true
}
