// Package sni reads a TLS ClientHello from the start of a connection
// without terminating TLS, and reports the server name it asks for.
//
// It reads only what the client sent, through a bounded reader: the
// records that carry the ClientHello (which may be split over several
// records and several TCP segments) and nothing after them. The bytes
// read are returned so the caller can replay them to the destination.
// It knows nothing of policy, DNS or sockets.
package sni

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Errors returned by Read and Parse. They are wrapped with detail; test
// with errors.Is.
var (
	// ErrNotTLS: the first bytes are not a TLS handshake record.
	ErrNotTLS = errors.New("not a TLS handshake")
	// ErrNotClientHello: a handshake, but the first message is not a ClientHello.
	ErrNotClientHello = errors.New("not a ClientHello")
	// ErrTruncated: the connection ended before the ClientHello was complete.
	ErrTruncated = errors.New("truncated ClientHello")
	// ErrTooLarge: the ClientHello is larger than the limit.
	ErrTooLarge = errors.New("ClientHello too large")
	// ErrMalformed: the ClientHello does not follow RFC 8446 / RFC 6066.
	ErrMalformed = errors.New("malformed ClientHello")
)

// Extension numbers the parser looks at.
const (
	extServerName = 0x0000
	extECH        = 0xfe0d // encrypted_client_hello (RFC 9849)
	extALPN       = 0x0010

	recordHandshake  = 22
	typeClientHello  = 1
	maxRecordPayload = 1<<14 + 256 // plaintext limit plus the slack some stacks use
	recordHeaderLen  = 5
	// maxRecords bounds how many records one ClientHello may span, so a
	// client cannot make the proxy read many tiny records.
	maxRecords = 64
)

// Hello is what the proxy needs from a ClientHello.
type Hello struct {
	// ServerName is the host_name of the server_name extension, exactly
	// as sent (not yet normalised); empty when HasSNI is false.
	ServerName string
	// HasSNI reports whether a server_name extension carried a host_name.
	HasSNI bool
	// ECH reports an encrypted_client_hello extension: ServerName is then
	// the outer (public) name and the real one is hidden.
	ECH bool
	// ALPN lists the offered application protocols.
	ALPN []string
	// Raw holds every byte read from the connection, to be replayed to
	// the destination before splicing.
	Raw []byte

	hdr [recordHeaderLen]byte // scratch for Read (a local would escape to the heap)
}

// Read reads the TLS records carrying one ClientHello from r and parses
// it. max bounds the ClientHello handshake message; the bytes read are
// bounded by max plus 64 record headers plus one record's overshoot. On error, the bytes read so
// far are in the returned Hello's Raw (never nil Hello).
func Read(r io.Reader, max int) (*Hello, error) {
	h := &Hello{}
	// msg is the reassembled handshake message. For the usual ClientHello
	// in one record it is that record's body inside Raw (no copy); its
	// capacity is clipped, so a second record makes append copy it out.
	var msg []byte
	hdr := h.hdr[:]
	need := -1 // total message length once known
	for records := 0; ; records++ {
		if records == maxRecords {
			return h, fmt.Errorf("%w: spread over more than %d records", ErrTooLarge, maxRecords)
		}
		if k, err := io.ReadFull(r, hdr); err != nil {
			h.Raw = append(h.Raw, hdr[:k]...)
			if records == 0 && k == 0 {
				return h, fmt.Errorf("%w: connection closed before any byte", ErrTruncated)
			}
			return h, fmt.Errorf("%w: record header: %v", ErrTruncated, err)
		}
		if hdr[0] != recordHandshake {
			h.Raw = append(h.Raw, hdr...)
			if records == 0 {
				return h, fmt.Errorf("%w: first byte 0x%02x (want 0x16)", ErrNotTLS, hdr[0])
			}
			return h, fmt.Errorf("%w: record type %d inside the ClientHello", ErrMalformed, hdr[0])
		}
		if hdr[1] != 3 {
			h.Raw = append(h.Raw, hdr...)
			return h, fmt.Errorf("%w: record version %d.%d", ErrNotTLS, hdr[1], hdr[2])
		}
		n := int(binary.BigEndian.Uint16(hdr[3:5]))
		switch {
		case n == 0:
			h.Raw = append(h.Raw, hdr...)
			return h, fmt.Errorf("%w: empty handshake record", ErrMalformed)
		case n > maxRecordPayload:
			h.Raw = append(h.Raw, hdr...)
			return h, fmt.Errorf("%w: record of %d bytes (limit %d)", ErrMalformed, n, maxRecordPayload)
		}
		start := len(h.Raw) + recordHeaderLen
		h.Raw = append(slices.Grow(h.Raw, recordHeaderLen+n), hdr...)
		h.Raw = h.Raw[:start+n]
		if k, err := io.ReadFull(r, h.Raw[start:]); err != nil {
			h.Raw = h.Raw[:start+k]
			return h, fmt.Errorf("%w: record body: %v", ErrTruncated, err)
		}
		body := h.Raw[start : start+n : start+n]
		if msg == nil {
			msg = body
		} else {
			msg = append(msg, body...)
		}
		if need < 0 && len(msg) >= 4 {
			if msg[0] != typeClientHello {
				return h, fmt.Errorf("%w: handshake type %d", ErrNotClientHello, msg[0])
			}
			need = 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if need-4 > max {
				return h, fmt.Errorf("%w: %d bytes announced (limit %d)", ErrTooLarge, need-4, max)
			}
		}
		if need >= 0 && len(msg) >= need {
			break
		}
	}
	if err := parseBody(h, msg[4:need]); err != nil {
		return h, err
	}
	return h, nil
}

// Parse parses a complete ClientHello handshake message (starting with
// the 4-byte handshake header, without record framing).
func Parse(msg []byte) (*Hello, error) {
	h := &Hello{}
	if len(msg) < 4 {
		return h, fmt.Errorf("%w: %d bytes", ErrTruncated, len(msg))
	}
	if msg[0] != typeClientHello {
		return h, fmt.Errorf("%w: handshake type %d", ErrNotClientHello, msg[0])
	}
	n := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
	if len(msg)-4 < n {
		return h, fmt.Errorf("%w: %d of %d bytes", ErrTruncated, len(msg)-4, n)
	}
	return h, parseBody(h, msg[4:4+n])
}

// reader is a tiny bounds-checked cursor over the ClientHello body.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if r.bad || n < 0 || n > len(r.b) {
		r.bad = true
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() int {
	b := r.bytes(1)
	if b == nil {
		return 0
	}
	return int(b[0])
}

func (r *reader) u16() int {
	b := r.bytes(2)
	if b == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(b))
}

func (r *reader) vec8() []byte  { return r.bytes(r.u8()) }
func (r *reader) vec16() []byte { return r.bytes(r.u16()) }

func parseBody(h *Hello, body []byte) error {
	r := &reader{b: body}
	r.bytes(2)  // legacy_version
	r.bytes(32) // random
	if sid := r.vec8(); len(sid) > 32 {
		return fmt.Errorf("%w: session id of %d bytes", ErrMalformed, len(sid))
	}
	if cs := r.vec16(); !r.bad && (len(cs) < 2 || len(cs)%2 != 0) {
		return fmt.Errorf("%w: cipher suites of %d bytes", ErrMalformed, len(cs))
	}
	if cm := r.vec8(); !r.bad && len(cm) < 1 {
		return fmt.Errorf("%w: no compression methods", ErrMalformed)
	}
	if r.bad {
		return fmt.Errorf("%w: ends inside the fixed fields", ErrMalformed)
	}
	if len(r.b) == 0 {
		return nil // no extensions at all (old clients): no SNI
	}
	exts := &reader{b: r.vec16()}
	if r.bad || len(r.b) != 0 {
		return fmt.Errorf("%w: extensions length does not match the message", ErrMalformed)
	}
	var seen extSet
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.vec16()
		if exts.bad {
			return fmt.Errorf("%w: extension overruns the list", ErrMalformed)
		}
		// RFC 8446 4.2: no extension type may appear twice. A second
		// server_name is how SNI smuggling would hide the real name.
		if !seen.add(uint16(typ)) {
			return fmt.Errorf("%w: extension %d appears twice", ErrMalformed, typ)
		}
		switch typ {
		case extServerName:
			if err := parseServerName(h, data); err != nil {
				return err
			}
		case extECH:
			h.ECH = true
		case extALPN:
			h.ALPN = parseALPN(data)
		}
	}
	return nil
}

// extSet records the extension types seen, without allocating for the
// usual ClientHello: a bitmap for types below 64 and a small array for
// the others (GREASE, ECH, renegotiation_info, ...).
type extSet struct {
	low  uint64
	n    int
	high [32]uint16
	more []uint16 // beyond len(high): only odd hellos get here
}

// add records typ and reports false if it was already there.
func (s *extSet) add(typ uint16) bool {
	if typ < 64 {
		bit := uint64(1) << typ
		if s.low&bit != 0 {
			return false
		}
		s.low |= bit
		return true
	}
	if slices.Contains(s.high[:s.n], typ) || slices.Contains(s.more, typ) {
		return false
	}
	if s.n < len(s.high) {
		s.high[s.n] = typ
		s.n++
	} else {
		s.more = append(s.more, typ)
	}
	return true
}

func parseServerName(h *Hello, data []byte) error {
	r := &reader{b: data}
	list := &reader{b: r.vec16()}
	if r.bad || len(r.b) != 0 {
		return fmt.Errorf("%w: server_name list length", ErrMalformed)
	}
	for len(list.b) > 0 {
		typ := list.u8()
		name := list.vec16()
		if list.bad {
			return fmt.Errorf("%w: server_name entry overruns the list", ErrMalformed)
		}
		if typ != 0 {
			continue // unknown name types are ignored (RFC 6066 3)
		}
		if h.HasSNI {
			return fmt.Errorf("%w: two host_name entries", ErrMalformed)
		}
		if len(name) == 0 || len(name) > 255 {
			return fmt.Errorf("%w: host_name of %d bytes", ErrMalformed, len(name))
		}
		for _, c := range name {
			if c <= ' ' || c >= 0x7f {
				return fmt.Errorf("%w: host_name has byte 0x%02x", ErrMalformed, c)
			}
		}
		h.ServerName, h.HasSNI = string(name), true
	}
	return nil
}

func parseALPN(data []byte) []string {
	r := &reader{b: data}
	list := &reader{b: r.vec16()}
	var out []string
	for len(list.b) > 0 && len(out) < 16 {
		p := list.vec8()
		if list.bad {
			return out
		}
		out = append(out, string(p))
	}
	return out
}
