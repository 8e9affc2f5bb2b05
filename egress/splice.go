package egress

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

type closeWriter interface{ CloseWrite() error }

// splice copies both ways until both directions end. Between two
// *net.TCPConn, io.Copy uses splice(2) on Linux, so bytes stay in the
// kernel. pre is written to the destination first (the peeked
// ClientHello and anything the client sent before the splice started).
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
	stopIdle := watchIdle(c, client, up, rt.lim.IdleTimeout)
	defer stopIdle()
	total := time.AfterFunc(rt.lim.MaxDuration, c.closeAll)
	defer total.Stop()

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
		up.CloseWrite()
	}()
	n, err := copyConn(client, up)
	rec.down += n
	if err != nil {
		c.closeAll()
	} else if cw, ok := client.(closeWriter); ok {
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

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// onlyWriter and onlyReader hide ReadFrom/WriteTo so io.CopyBuffer uses
// the buffer instead of splice for the first bytes.
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }

func copyConn(dst, src net.Conn) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{io.LimitReader(src, spliceAfter)}, *bp)
	copyBufs.Put(bp)
	if err != nil || n < spliceAfter {
		return n, err // src ended (or failed) within the first bytes
	}
	m, err := io.Copy(dst, src)
	return n + m, err
}

// watchIdle closes the connection when neither side has sent data for
// idle. It asks the kernel (TCP_INFO) when data last arrived on each
// socket, so the copy loops stay zero-copy with no per-read bookkeeping.
func watchIdle(c *conn, a, b net.Conn, idle time.Duration) (stop func()) {
	var t *time.Timer
	var mu sync.Mutex
	stopped := false
	check := func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		la, oka := lastRecv(a)
		lb, okb := lastRecv(b)
		if !oka || !okb {
			return // not TCP: only max_duration applies
		}
		since := min(la, lb)
		if since >= idle {
			c.closeAll()
			return
		}
		t.Reset(idle - since)
	}
	mu.Lock()
	t = time.AfterFunc(idle, check)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
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
