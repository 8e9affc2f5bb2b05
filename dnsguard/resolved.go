package dnsguard

import (
	"hash/maphash"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/ztgate/ztgate/dnsguard/internal/lru"
)

type resolvedKey struct {
	client netip.Addr
	name   string
}

type resolvedAddr struct {
	addr  netip.Addr
	until int64 // unix ns: TTL + grace after the answer was handed out
}

type resolvedShard struct {
	mu    sync.Mutex
	m     *lru.LRU[resolvedKey, []resolvedAddr]
	bytes int64
}

const resolvedShards = 16

// maxAddrsPerName bounds one (client, name) entry.
const maxAddrsPerName = 32

// resolvedTable remembers which addresses dnsguard handed to which client
// for which name, until TTL plus grace (Cilium toFQDNs-style). Capped LRU.
type resolvedTable struct {
	seed   maphash.Seed
	shards [resolvedShards]resolvedShard
}

func newResolvedTable(maxEntries int) *resolvedTable {
	t := &resolvedTable{seed: maphash.MakeSeed()}
	for i := range t.shards {
		s := &t.shards[i]
		s.m = lru.New[resolvedKey, []resolvedAddr](max(maxEntries/resolvedShards, 1))
		s.m.OnEvict = func(k resolvedKey, v []resolvedAddr) { s.bytes -= entryBytes(k, v) }
	}
	return t
}

func entryBytes(k resolvedKey, v []resolvedAddr) int64 {
	return int64(96 + len(k.name) + 32*cap(v))
}

func (t *resolvedTable) setCap(n int) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.m.SetCap(max(n/resolvedShards, 1))
		s.mu.Unlock()
	}
}

func (t *resolvedTable) shard(name string) *resolvedShard {
	return &t.shards[maphash.String(t.seed, name)%resolvedShards]
}

// record notes that client was given addrs for name, valid until until.
func (t *resolvedTable) record(client netip.Addr, name string, addrs []netip.Addr, until time.Time, now time.Time) {
	if len(addrs) == 0 {
		return
	}
	k := resolvedKey{client, name}
	s := t.shard(name)
	u, ns := until.UnixNano(), now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.m.Get(k)
	if ok && len(old) >= len(addrs) {
		// The common case (a cache hit for the same answer): refresh in
		// place, no allocation.
		same := true
		for i, a := range addrs {
			if old[i].addr != a {
				same = false
				break
			}
		}
		if same {
			for i := range addrs {
				old[i].until = max(old[i].until, u)
			}
			return
		}
	}
	if ok {
		s.bytes -= entryBytes(k, old)
	} else {
		k.name = strings.Clone(name)
	}
	// Keep unexpired old addresses, refresh or add the new ones.
	next := make([]resolvedAddr, 0, min(len(old)+len(addrs), maxAddrsPerName))
	for _, a := range addrs {
		if len(next) < maxAddrsPerName {
			next = append(next, resolvedAddr{a, u})
		}
	}
	for _, o := range old {
		if o.until <= ns || len(next) >= maxAddrsPerName {
			continue
		}
		dup := false
		for _, n := range next {
			if n.addr == o.addr {
				dup = true
				break
			}
		}
		if !dup {
			next = append(next, o)
		}
	}
	s.m.Put(k, next)
	s.bytes += entryBytes(k, next)
}

func (t *resolvedTable) lookup(client netip.Addr, name string, addr netip.Addr, now time.Time) bool {
	s := t.shard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m.Peek(resolvedKey{client, name})
	if !ok {
		return false
	}
	for _, a := range v {
		if a.addr == addr && now.UnixNano() < a.until {
			return true
		}
	}
	return false
}

func (t *resolvedTable) size() (entries int, bytes int64) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		entries += s.m.Len()
		bytes += s.bytes
		s.mu.Unlock()
	}
	return
}
