// Package cache is dnsguard's answer cache: DNS responses kept in wire
// form with the offsets of their TTLs, so a hit is one copy and a few
// stores. It is bounded by entry count (LRU) and survives reloads.
package cache

import (
	"encoding/binary"
	"errors"
	"hash/maphash"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/ztgate/ztgate/dnsguard/internal/lru"
)

// Key identifies a cached answer. Name must be lower case.
type Key struct {
	Name  string
	Type  uint16
	Class uint16
	DO    bool // DNSSEC OK: answers with signatures are cached apart
	CD    bool
}

// Entry is one cached response. It is immutable once stored.
type Entry struct {
	wire    []byte   // response with ID 0, no OPT record, TTLs as received
	ttlOffs []uint16 // offsets of the TTL fields to age
	ttls    []uint32 // their values when stored
	stored  int64    // unix ns
	expires int64    // unix ns: stored + min TTL (clamped)
	Rcode   int
	// Addrs are the A/AAAA addresses of the answer section, for the
	// resolved-address table.
	Addrs []netip.Addr
	// Domain is the registered domain of the name, set by dnsguard
	// before the entry is stored, so a hit can check quarantine cheaply.
	Domain string
}

// TTL returns the entry's remaining lifetime at now (negative when expired).
func (e *Entry) TTL(now time.Time) time.Duration { return time.Duration(e.expires - now.UnixNano()) }

// Size is the accounted memory of the entry.
func (e *Entry) Size() int { return len(e.wire) + 6*len(e.ttlOffs) + 24*len(e.Addrs) + 160 }

// Wire returns a copy of the response for a client: with id, the client's
// spelling of the question name (same length, so compression pointers
// stay valid), flags rd/cd, and every TTL aged to now. stale forces TTL 30.
func (e *Entry) Wire(dst []byte, id uint16, qname string, rd, cd bool, now time.Time, stale bool) []byte {
	b := append(dst[:0], e.wire...)
	binary.BigEndian.PutUint16(b[0:], id)
	if rd {
		b[2] |= 0x01
	} else {
		b[2] &^= 0x01
	}
	if cd {
		b[3] |= 0x10
	} else {
		b[3] &^= 0x10
	}
	copyQName(b, qname)
	age := uint32(max(now.UnixNano()-e.stored, 0) / int64(time.Second))
	for i, off := range e.ttlOffs {
		t := e.ttls[i]
		switch {
		case stale:
			t = 30
		case t > age:
			t -= age
		default:
			t = 0
		}
		binary.BigEndian.PutUint32(b[off:], t)
	}
	return b
}

// copyQName overwrites the question name's label bytes with qname's (same
// length, different case) so 0x20-randomising clients see their own case.
func copyQName(b []byte, qname string) {
	off := 12
	i := 0
	for off < len(b) {
		l := int(b[off])
		if l == 0 || l&0xC0 != 0 {
			return
		}
		off++
		for j := 0; j < l && off < len(b); j++ {
			if i >= len(qname) {
				return
			}
			c := qname[i]
			if c == '\\' { // escaped names: leave as stored
				return
			}
			if c|0x20 == b[off]|0x20 {
				b[off] = c
			}
			i++
			off++
		}
		if i < len(qname) && qname[i] == '.' {
			i++
		}
	}
}

// ErrMalformed is returned by NewEntry for wire data it cannot walk.
var ErrMalformed = errors.New("cache: malformed message")

// NewEntry prepares a response for the cache. wire must have no OPT
// record. ttl is the clamped lifetime of the entry; ttlFloor raises every
// record TTL to at least that (min_ttl), ttlCeil lowers them (max_ttl).
func NewEntry(wire []byte, rcode int, ttl time.Duration, ttlFloor, ttlCeil uint32, addrs []netip.Addr, now time.Time) (*Entry, error) {
	w := append([]byte(nil), wire...)
	if len(w) < 12 {
		return nil, ErrMalformed
	}
	w[0], w[1] = 0, 0
	qd := int(binary.BigEndian.Uint16(w[4:]))
	rrs := int(binary.BigEndian.Uint16(w[6:])) + int(binary.BigEndian.Uint16(w[8:])) + int(binary.BigEndian.Uint16(w[10:]))
	off := 12
	var err error
	for i := 0; i < qd; i++ {
		if off, err = skipName(w, off); err != nil {
			return nil, err
		}
		off += 4
	}
	e := &Entry{stored: now.UnixNano(), expires: now.UnixNano() + int64(ttl), Rcode: rcode, Addrs: addrs}
	for i := 0; i < rrs; i++ {
		if off, err = skipName(w, off); err != nil {
			return nil, err
		}
		if off+10 > len(w) {
			return nil, ErrMalformed
		}
		typ := binary.BigEndian.Uint16(w[off:])
		if typ != 41 {
			t := binary.BigEndian.Uint32(w[off+4:])
			t = min(max(t, ttlFloor), ttlCeil)
			binary.BigEndian.PutUint32(w[off+4:], t)
			e.ttlOffs = append(e.ttlOffs, uint16(off+4))
			e.ttls = append(e.ttls, t)
		}
		rdlen := int(binary.BigEndian.Uint16(w[off+8:]))
		off += 10 + rdlen
		if off > len(w) || off > 0xffff {
			return nil, ErrMalformed
		}
	}
	e.wire = w
	return e, nil
}

func skipName(b []byte, off int) (int, error) {
	for n := 0; n < 128; n++ {
		if off >= len(b) {
			return 0, ErrMalformed
		}
		l := int(b[off])
		switch {
		case l == 0:
			return off + 1, nil
		case l&0xC0 == 0xC0:
			return off + 2, nil
		case l&0xC0 != 0:
			return 0, ErrMalformed
		}
		off += 1 + l
	}
	return 0, ErrMalformed
}

type shard struct {
	mu    sync.Mutex
	m     *lru.LRU[Key, *Entry]
	bytes int64
}

const numShards = 16

// Cache is a sharded LRU of entries with an entry cap.
type Cache struct {
	seed   maphash.Seed
	shards [numShards]shard
}

// New returns a cache of at most maxEntries entries.
func New(maxEntries int) *Cache {
	c := &Cache{seed: maphash.MakeSeed()}
	for i := range c.shards {
		s := &c.shards[i]
		s.m = lru.New[Key, *Entry](max(maxEntries/numShards, 1))
		s.m.OnEvict = func(k Key, e *Entry) { s.bytes -= int64(e.Size() + len(k.Name)) }
	}
	return c
}

// SetCap changes the entry cap, evicting as needed.
func (c *Cache) SetCap(maxEntries int) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.m.SetCap(max(maxEntries/numShards, 1))
		s.mu.Unlock()
	}
}

func (c *Cache) shard(k *Key) *shard {
	return &c.shards[maphash.String(c.seed, k.Name)%numShards]
}

// Get returns the entry for k, fresh or not; the caller decides whether
// an expired entry may be served stale (within staleFor).
func (c *Cache) Get(k Key, now time.Time, staleFor time.Duration) (e *Entry, fresh bool) {
	s := c.shard(&k)
	s.mu.Lock()
	e, ok := s.m.Get(k)
	if ok && now.UnixNano() >= e.expires+int64(staleFor) {
		s.m.Remove(k)
		s.bytes -= int64(e.Size() + len(k.Name))
		e, ok = nil, false
	}
	s.mu.Unlock()
	if !ok {
		return nil, false
	}
	return e, now.UnixNano() < e.expires
}

// Set stores e under k.
func (c *Cache) Set(k Key, e *Entry) {
	k.Name = strings.Clone(k.Name)
	s := c.shard(&k)
	s.mu.Lock()
	if old, ok := s.m.Peek(k); ok {
		s.bytes -= int64(old.Size() + len(k.Name))
	}
	s.m.Put(k, e)
	s.bytes += int64(e.Size() + len(k.Name))
	s.mu.Unlock()
}

// Size returns the number of entries and their accounted bytes.
func (c *Cache) Size() (entries int, bytes int64) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		entries += s.m.Len()
		bytes += s.bytes
		s.mu.Unlock()
	}
	return
}
