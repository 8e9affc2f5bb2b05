//go:build !linux

package upstream

// peekSupported is false where a pooled connection's socket cannot be
// checked without a read: http.Transport carries every request there.
const peekSupported = false

func peekWouldBlock(fd uintptr) bool { return false }
