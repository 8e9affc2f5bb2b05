// Package lru is a small least-recently-used map with a hard entry cap.
// It does no locking: callers shard and lock around it.
package lru

type entry[K comparable, V any] struct {
	key        K
	val        V
	prev, next *entry[K, V]
}

// LRU is a map of at most Cap entries; adding beyond Cap evicts the least
// recently used entry.
type LRU[K comparable, V any] struct {
	cap     int
	m       map[K]*entry[K, V]
	root    entry[K, V] // sentinel: root.next is the most recent
	free    *entry[K, V]
	OnEvict func(K, V)
}

// New returns an LRU holding at most capacity entries (at least 1).
func New[K comparable, V any](capacity int) *LRU[K, V] {
	if capacity < 1 {
		capacity = 1
	}
	l := &LRU[K, V]{cap: capacity, m: make(map[K]*entry[K, V])}
	l.root.next, l.root.prev = &l.root, &l.root
	return l
}

// Len is the number of entries.
func (l *LRU[K, V]) Len() int { return len(l.m) }

// Cap is the entry cap.
func (l *LRU[K, V]) Cap() int { return l.cap }

// SetCap changes the cap, evicting the oldest entries if needed.
func (l *LRU[K, V]) SetCap(c int) {
	if c < 1 {
		c = 1
	}
	l.cap = c
	for len(l.m) > l.cap {
		l.evictOldest()
	}
}

func (l *LRU[K, V]) unlink(e *entry[K, V]) {
	e.prev.next = e.next
	e.next.prev = e.prev
}

func (l *LRU[K, V]) pushFront(e *entry[K, V]) {
	e.prev = &l.root
	e.next = l.root.next
	l.root.next.prev = e
	l.root.next = e
}

// Get returns the value for k and marks it recently used.
func (l *LRU[K, V]) Get(k K) (V, bool) {
	e, ok := l.m[k]
	if !ok {
		var zero V
		return zero, false
	}
	l.unlink(e)
	l.pushFront(e)
	return e.val, true
}

// Peek returns the value for k without touching its recency.
func (l *LRU[K, V]) Peek(k K) (V, bool) {
	e, ok := l.m[k]
	if !ok {
		var zero V
		return zero, false
	}
	return e.val, true
}

// Put sets k to v as the most recent entry, evicting the oldest if full.
func (l *LRU[K, V]) Put(k K, v V) {
	if e, ok := l.m[k]; ok {
		e.val = v
		l.unlink(e)
		l.pushFront(e)
		return
	}
	for len(l.m) >= l.cap {
		l.evictOldest()
	}
	e := l.free
	if e != nil {
		l.free = nil
	} else {
		e = &entry[K, V]{}
	}
	e.key, e.val = k, v
	l.m[k] = e
	l.pushFront(e)
}

// Remove deletes k.
func (l *LRU[K, V]) Remove(k K) {
	if e, ok := l.m[k]; ok {
		l.unlink(e)
		delete(l.m, k)
	}
}

// Oldest returns the least recently used entry.
func (l *LRU[K, V]) Oldest() (K, V, bool) {
	if len(l.m) == 0 {
		var k K
		var v V
		return k, v, false
	}
	e := l.root.prev
	return e.key, e.val, true
}

// Range calls f from the most to the least recent entry until f returns false.
func (l *LRU[K, V]) Range(f func(K, V) bool) {
	for e := l.root.next; e != &l.root; e = e.next {
		if !f(e.key, e.val) {
			return
		}
	}
}

func (l *LRU[K, V]) evictOldest() {
	e := l.root.prev
	if e == &l.root {
		return
	}
	l.unlink(e)
	delete(l.m, e.key)
	if l.OnEvict != nil {
		l.OnEvict(e.key, e.val)
	}
	var zk K
	var zv V
	e.key, e.val, e.prev, e.next = zk, zv, nil, nil
	l.free = e
}
