package dnsguard

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"github.com/ztgate/ztgate/dnsguard/internal/lru"
)

type bucket struct {
	tokens float64
	last   int64
}

type rlShard struct {
	mu sync.Mutex
	m  *lru.LRU[netip.Addr, *bucket]
}

const rlShards = 16

// limiter is a per-client token bucket in a capped LRU. An evicted client
// starts again with a full bucket, which only errs towards serving.
type limiter struct {
	seed   maphash.Seed
	shards [rlShards]rlShard
}

func newLimiter(maxClients int) *limiter {
	l := &limiter{seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].m = lru.New[netip.Addr, *bucket](max(maxClients/rlShards, 1))
	}
	return l
}

func (l *limiter) setCap(maxClients int) {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		s.m.SetCap(max(maxClients/rlShards, 1))
		s.mu.Unlock()
	}
}

func (l *limiter) size() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += s.m.Len()
		s.mu.Unlock()
	}
	return n
}

// allow takes one token for client; qps <= 0 means no limit.
func (l *limiter) allow(client netip.Addr, now time.Time, qps float64, burst int) bool {
	if qps <= 0 {
		return true
	}
	b16 := client.As16()
	s := &l.shards[maphash.Bytes(l.seed, b16[:])%rlShards]
	ns := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m.Get(client)
	if !ok {
		b = &bucket{tokens: float64(burst), last: ns}
		s.m.Put(client, b)
	}
	b.tokens = min(float64(burst), b.tokens+float64(ns-b.last)/1e9*qps)
	b.last = ns
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
