// Package ipset is an immutable set of IPv4 and IPv6 prefixes with a
// lookup in O(log n): the prefixes are merged into sorted, disjoint
// address ranges and searched by binary search. 10,000 CIDRs cost a few
// hundred nanoseconds at most, not a linear scan.
package ipset

import (
	"net/netip"
	"slices"
	"sort"
)

// Set is a compiled set of prefixes. The zero value is empty. A Set is
// never written after New returns, so it is safe for concurrent use.
type Set struct {
	v4 []r4
	v6 []r6
	n  int
}

type r4 struct{ lo, hi uint32 }

type u128 struct{ hi, lo uint64 }

type r6 struct{ lo, hi u128 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a u128) inc() (u128, bool) {
	lo := a.lo + 1
	hi := a.hi
	if lo == 0 {
		hi++
		if hi == 0 {
			return u128{}, true
		}
	}
	return u128{hi, lo}, false
}

// New builds a Set. IPv4-mapped IPv6 prefixes (::ffff:10.0.0.0/104) are
// stored as IPv4, and lookups unmap addresses, so either spelling works.
func New(prefixes []netip.Prefix) *Set {
	s := &Set{n: len(prefixes)}
	var v4 []r4
	var v6 []r6
	for _, p := range prefixes {
		p = p.Masked()
		a := p.Addr()
		if a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
			a = p.Addr()
		}
		if a.Is4() {
			b := a.As4()
			lo := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
			host := uint32(0)
			if p.Bits() < 32 {
				host = ^uint32(0) >> p.Bits()
			}
			v4 = append(v4, r4{lo, lo | host})
			continue
		}
		b := a.As16()
		lo := u128{be64(b[:8]), be64(b[8:])}
		hi := lo
		switch bits := p.Bits(); {
		case bits == 0:
			hi = u128{^uint64(0), ^uint64(0)}
		case bits < 64:
			hi = u128{lo.hi | ^uint64(0)>>bits, ^uint64(0)}
		case bits < 128:
			hi = u128{lo.hi, lo.lo | ^uint64(0)>>(bits-64)}
		}
		v6 = append(v6, r6{lo, hi})
	}
	sort.Slice(v4, func(i, j int) bool { return v4[i].lo < v4[j].lo })
	for _, r := range v4 {
		if n := len(s.v4); n > 0 && (r.lo <= s.v4[n-1].hi || s.v4[n-1].hi != ^uint32(0) && r.lo == s.v4[n-1].hi+1) {
			s.v4[n-1].hi = max(s.v4[n-1].hi, r.hi)
			continue
		}
		s.v4 = append(s.v4, r)
	}
	sort.Slice(v6, func(i, j int) bool { return v6[i].lo.less(v6[j].lo) })
	for _, r := range v6 {
		if n := len(s.v6); n > 0 {
			last := &s.v6[n-1]
			next, overflow := last.hi.inc()
			if overflow || !next.less(r.lo) { // r.lo <= last.hi+1
				if last.hi.less(r.hi) {
					last.hi = r.hi
				}
				continue
			}
		}
		s.v6 = append(s.v6, r)
	}
	s.v4 = slices.Clip(s.v4)
	s.v6 = slices.Clip(s.v6)
	return s
}

func be64(b []byte) uint64 {
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

// Len is the number of prefixes the set was built from.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return s.n
}

// Ranges is the number of disjoint ranges after merging.
func (s *Set) Ranges() int {
	if s == nil {
		return 0
	}
	return len(s.v4) + len(s.v6)
}

// Contains reports whether a is in the set. An invalid address is in no set.
func (s *Set) Contains(a netip.Addr) bool {
	if s == nil || !a.IsValid() {
		return false
	}
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		x := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		// The first range whose hi >= x; it contains x if lo <= x.
		lo, hi := 0, len(s.v4)
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if s.v4[m].hi < x {
				lo = m + 1
			} else {
				hi = m
			}
		}
		return lo < len(s.v4) && s.v4[lo].lo <= x
	}
	b := a.As16()
	x := u128{be64(b[:8]), be64(b[8:])}
	lo, hi := 0, len(s.v6)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.v6[m].hi.less(x) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(s.v6) && !x.less(s.v6[lo].lo)
}
