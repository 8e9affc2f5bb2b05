package jwt

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
	"unsafe"

	"github.com/ztgate/ztgate/authn"
)

// maxCacheTTL bounds how long a verified token is trusted without a new
// signature check, so a key removed from the JWKS stops working soon.
const maxCacheTTL = 5 * time.Minute

const cacheShards = 16

// tokenCache remembers verified tokens, keyed by the SHA-256 of the raw
// token. It is bounded (LRU per shard) and never returns an entry past
// the token's exp.
type tokenCache struct {
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu    sync.Mutex
	cap   int
	ll    *list.List
	items map[[32]byte]*list.Element
}

type cacheEntry struct {
	key      [32]byte
	id       *authn.Identity
	provider *provider
	until    time.Time
}

func newTokenCache(size int) *tokenCache {
	if size <= 0 {
		return nil
	}
	c := &tokenCache{}
	per := max(1, (size+cacheShards-1)/cacheShards)
	for i := range c.shards {
		c.shards[i] = cacheShard{cap: per, ll: list.New(), items: map[[32]byte]*list.Element{}}
	}
	return c
}

// tokenKey hashes the token without copying it (sha256 neither keeps
// nor modifies its input).
func tokenKey(tok string) [32]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(tok), len(tok)))
}

func (c *tokenCache) get(k [32]byte, now time.Time) (*cacheEntry, bool) {
	if c == nil {
		return nil, false
	}
	s := &c.shards[k[0]%cacheShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.items[k]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.until) {
		s.ll.Remove(el)
		delete(s.items, k)
		return nil, false
	}
	s.ll.MoveToFront(el)
	return e, true
}

func (c *tokenCache) put(e *cacheEntry) {
	if c == nil {
		return
	}
	s := &c.shards[e.key[0]%cacheShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.items[e.key]; ok {
		el.Value = e
		s.ll.MoveToFront(el)
		return
	}
	s.items[e.key] = s.ll.PushFront(e)
	for s.ll.Len() > s.cap {
		old := s.ll.Back()
		s.ll.Remove(old)
		delete(s.items, old.Value.(*cacheEntry).key)
	}
}

func (c *tokenCache) len() int {
	if c == nil {
		return 0
	}
	n := 0
	for i := range c.shards {
		c.shards[i].mu.Lock()
		n += c.shards[i].ll.Len()
		c.shards[i].mu.Unlock()
	}
	return n
}
