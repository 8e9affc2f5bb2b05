package rego

import (
	"runtime"
	"sync"
)

// stackPad is stack space a worker holds while it waits for work. OPA
// evaluates by deep recursion (tens of KiB of stack for a small policy).
// On a request goroutine that stack is grown, then halved again by the
// next garbage collection once the goroutine idles on its connection,
// and grown again by the next evaluation: each growth copies the whole
// stack and rewrites its frames, which cost more than the evaluation of
// a small policy under a busy proxy's GC rate. The runtime shrinks a
// stack only when less than a quarter of it is in use, so a worker that
// keeps this much live below its waiting frame keeps a stack of up to
// four times the pad grown from one evaluation to the next.
//
// 40 KiB keeps stacks of up to 160 KiB; the zbench chain policy needs
// about 32 KiB (OPA 1.22), so its workers settle at 128 KiB.
const stackPad = 40 << 10

// evalPool runs evaluations on a few long-lived goroutines whose stacks
// stay grown (see stackPad). Handing an evaluation over costs two
// goroutine switches; when every worker is busy the caller evaluates
// itself rather than wait, so the pool never queues, never adds
// latency under load, and bounds its goroutines to max.
type evalPool struct {
	jobs chan *evalJob
	quit chan struct{}

	mu      sync.Mutex
	workers int
	max     int
	closed  bool
	wg      sync.WaitGroup
}

type evalJob struct {
	f     func()
	done  chan struct{}
	panic any // a panic in f, re-raised on the caller's goroutine
	ok    bool
}

var jobPool = sync.Pool{New: func() any { return &evalJob{done: make(chan struct{}, 1)} }}

func newEvalPool(max int) *evalPool {
	return &evalPool{jobs: make(chan *evalJob), quit: make(chan struct{}), max: max}
}

// do runs f on an idle worker, a new one, or (all max busy, or the pool
// closed) the calling goroutine, and returns when f has returned. A
// panic in f is raised again here, as if f had run inline.
func (p *evalPool) do(f func()) {
	j := jobPool.Get().(*evalJob)
	j.f, j.panic, j.ok = f, nil, false
	select {
	case p.jobs <- j:
	default:
		if !p.start(j) {
			j.f = nil
			jobPool.Put(j)
			f()
			return
		}
	}
	<-j.done
	pv, ok := j.panic, j.ok
	j.f, j.panic = nil, nil
	jobPool.Put(j)
	if !ok {
		panic(pv)
	}
}

func (p *evalPool) start(first *evalJob) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.workers >= p.max {
		return false
	}
	p.workers++
	p.wg.Add(1)
	go p.work(first)
	return true
}

// work keeps stackPad bytes live in its own frame while it waits, so the
// runtime does not shrink the stack the evaluations grew.
//
//go:noinline
func (p *evalPool) work(j *evalJob) {
	defer p.wg.Done()
	var pad [stackPad]byte
	for {
		run(j)
		select {
		case j = <-p.jobs:
		case <-p.quit:
			keep(&pad) // pad, and its stack space, stays live until here
			return
		}
	}
}

// keep takes the pad's address, so the compiler keeps the pad in its
// caller's frame.
//
//go:noinline
func keep(*[stackPad]byte) {}

func run(j *evalJob) {
	defer func() {
		if !j.ok {
			j.panic = recover()
		}
		j.done <- struct{}{}
	}()
	j.f()
	j.ok = true
}

// close stops the workers once they finish what they run; later calls
// to do run inline.
func (p *evalPool) close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.quit)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// defaultWorkers: twice the evaluations that can run at once, so a
// request whose worker is descheduled mid-evaluation (a GC assist, a
// preemption) finds another warm one rather than evaluating on its own
// stack.
func defaultWorkers() int { return 2 * runtime.GOMAXPROCS(0) }

// The process shares one pool: the stacks it keeps are a property of the
// process, not of a policy, so 2×GOMAXPROCS workers serve every policy of
// every config. Each Policy holds a reference; the workers stop when the
// last one is closed (a reload opens the new config's policies before it
// closes the old ones, so they live across reloads).
var shared struct {
	mu   sync.Mutex
	refs int
	pool *evalPool
}

func acquirePool() *evalPool {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.pool == nil {
		shared.pool = newEvalPool(defaultWorkers())
	}
	shared.refs++
	return shared.pool
}

func releasePool(p *evalPool) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.pool != p {
		return // already stopped; p is closed
	}
	if shared.refs--; shared.refs == 0 {
		shared.pool = nil
		p.close()
	}
}
