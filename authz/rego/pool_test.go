package rego

import (
	"sync"
	"testing"
)

// TestPool: do returns after f ran; at most max workers run at once and
// a caller that finds them all busy runs f itself instead of waiting; a
// panic reaches the caller; after close, f runs inline and no worker is
// left.
func TestPool(t *testing.T) {
	p := newEvalPool(2)
	n := 0
	for range 100 {
		p.do(func() { n++ })
	}
	if n != 100 {
		t.Fatalf("ran %d times, want 100", n)
	}

	// Occupy both workers (and any the first loop left idle) ...
	started, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.do(func() { started <- struct{}{}; <-release })
		}()
	}
	<-started
	<-started
	// ... so this one runs on the caller: it completes while they block.
	ran := false
	p.do(func() { ran = true })
	if !ran {
		t.Fatal("f did not run while the workers were busy")
	}
	p.mu.Lock()
	workers := p.workers
	p.mu.Unlock()
	if workers != 2 {
		t.Errorf("%d workers, want 2", workers)
	}
	close(release)
	wg.Wait()

	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want the panic of f", r)
			}
		}()
		p.do(func() { panic("boom") })
	}()
	p.do(func() { n++ }) // the pool still works after a panic
	p.close()            // waits for the workers to exit
	p.do(func() { n++ })
	if n != 102 {
		t.Errorf("ran %d times, want 102", n)
	}
}

// BenchmarkPoolHandoff: the cost of running an evaluation on a worker
// instead of the caller's goroutine.
func BenchmarkPoolHandoff(b *testing.B) {
	p := newEvalPool(defaultWorkers())
	defer p.close()
	n := 0
	for b.Loop() {
		p.do(func() { n++ })
	}
}

// TestSharedPool: policies share one pool, which stops when the last
// reference is released; a later policy starts a new one.
func TestSharedPool(t *testing.T) {
	shared.mu.Lock()
	saved := shared.refs
	savedPool := shared.pool
	shared.refs, shared.pool = 0, nil
	shared.mu.Unlock()
	defer func() {
		shared.mu.Lock()
		shared.refs, shared.pool = saved, savedPool
		shared.mu.Unlock()
	}()

	a, b := acquirePool(), acquirePool()
	if a != b {
		t.Fatal("two pools in one process")
	}
	a.do(func() {}) // starts a worker
	releasePool(a)
	if a.closed {
		t.Fatal("closed while a policy still uses it")
	}
	releasePool(b)
	if !a.closed || shared.pool != nil {
		t.Fatal("the last release did not stop the pool")
	}
	releasePool(a) // a late release of a stopped pool changes nothing
	c := acquirePool()
	if c == a || c.closed {
		t.Fatal("a new policy got the stopped pool")
	}
	releasePool(c)
}
