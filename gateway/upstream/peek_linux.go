package upstream

import (
	"syscall"
	"unsafe"
)

// peekSupported: quiet can look at a pooled connection's socket, so the
// h1 fast path may reuse connections.
const peekSupported = true

// peekWouldBlock reports whether a non-blocking one-byte MSG_PEEK on
// the socket fd finds nothing to read (EAGAIN): no data and no EOF.
func peekWouldBlock(fd uintptr) bool {
	var b [1]byte
	_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno == syscall.EAGAIN || errno == syscall.EWOULDBLOCK
}
