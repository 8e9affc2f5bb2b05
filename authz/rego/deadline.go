package rego

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/topdown"
)

// checkEvery is how many cancellation checks pass between two looks at
// the clock. OPA asks before every expression it evaluates (and inside
// long builtins such as numbers.range and walk); a look at the clock
// costs about as much as a few expressions, so looking at every 16th
// keeps the overhead small and the overshoot to a handful of steps.
const checkEvery = 16

// deadline ends one evaluation when its time is up or the caller's
// context is done. It is the topdown.Cancel OPA polls while it
// evaluates, so it needs no timer and no goroutine (OPA's own
// cancellation starts a goroutine per evaluation to watch the context).
// The guarantee is the same as OPA's: evaluation stops at its next
// check after the deadline. Builtins that block on I/O do not poll, so
// policies that call them use a context deadline instead (see
// blockingBuiltins).
//
// One deadline serves one evaluation, on the goroutine that evaluates.
type deadline struct {
	at    time.Time // monotonic
	ctx   context.Context
	done  <-chan struct{} // ctx.Done(); nil never fires
	n     uint32
	fired atomic.Bool
	err   error // why it fired
}

var _ topdown.Cancel = (*deadline)(nil)

func newDeadline(ctx context.Context, start time.Time, timeout time.Duration) *deadline {
	d := &deadline{at: start.Add(timeout), ctx: ctx, done: ctx.Done()}
	if t, ok := ctx.Deadline(); ok && t.Before(d.at) {
		d.at = t
	}
	return d
}

// Cancel stops the evaluation at its next check.
func (d *deadline) Cancel() {
	if d.err == nil {
		d.err = context.Canceled
	}
	d.fired.Store(true)
}

// Cancelled reports whether the evaluation must stop.
func (d *deadline) Cancelled() bool {
	if d.fired.Load() {
		return true
	}
	d.n++
	if d.n%checkEvery != 0 {
		return false
	}
	if !time.Now().Before(d.at) {
		d.err = context.DeadlineExceeded
		d.fired.Store(true)
		return true
	}
	select {
	case <-d.done:
		d.err = d.ctx.Err()
		d.fired.Store(true)
		return true
	default:
		return false
	}
}
