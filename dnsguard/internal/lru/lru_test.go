package lru

import "testing"

func TestLRU(t *testing.T) {
	l := New[string, int](2)
	var evicted []string
	l.OnEvict = func(k string, _ int) { evicted = append(evicted, k) }
	l.Put("a", 1)
	l.Put("b", 2)
	l.Get("a") // b is now the oldest
	l.Put("c", 3)
	if _, ok := l.Peek("b"); ok || len(evicted) != 1 || evicted[0] != "b" {
		t.Fatalf("evicted %v, want [b]", evicted)
	}
	if v, ok := l.Get("a"); !ok || v != 1 {
		t.Fatalf("a = %v %v", v, ok)
	}
	l.SetCap(1)
	if l.Len() != 1 || evicted[1] != "c" {
		t.Fatalf("SetCap(1): len %d, evicted %v", l.Len(), evicted)
	}
	l.Remove("a")
	if l.Len() != 0 {
		t.Fatalf("Remove: len %d", l.Len())
	}
	if _, _, ok := l.Oldest(); ok {
		t.Fatal("Oldest on empty")
	}
	for i := 0; i < 1000; i++ {
		l.Put(string(rune('a'+i%26)), i)
		if l.Len() > l.Cap() {
			t.Fatalf("len %d above cap %d", l.Len(), l.Cap())
		}
	}
}
