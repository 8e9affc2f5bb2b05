package upstream

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/ztgate/ztgate/configs"
)

// healthChecker probes every endpoint of a pool each interval, from one
// goroutine per pool (probes of one round run in parallel and are all
// finished before the next round).
type healthChecker struct {
	p      *Pool
	cfg    *configs.HealthCheck
	lo, hi int
}

func newHealthChecker(p *Pool, cfg *configs.HealthCheck) (*healthChecker, error) {
	lo, hi, err := configs.ParseStatusRange(cfg.ExpectedStatus)
	if err != nil {
		return nil, err
	}
	return &healthChecker{p: p, cfg: cfg, lo: lo, hi: hi}, nil
}

func (h *healthChecker) run() {
	defer close(h.p.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-h.p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	for {
		h.round(ctx)
		if ctx.Err() != nil {
			return
		}
		h.p.healthRun.Store(true)
		if h.p.hooks.onCheck != nil {
			h.p.hooks.onCheck()
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func (h *healthChecker) round(ctx context.Context) {
	var wg sync.WaitGroup
	results := make([]bool, len(h.p.eps))
	for i, e := range h.p.eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = h.probe(ctx, e)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	for i, e := range h.p.eps {
		h.record(e, results[i])
	}
}

func (h *healthChecker) probe(ctx context.Context, e *endpoint) bool {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.p.scheme+"://"+e.addr+h.cfg.Path, nil)
	if err != nil {
		return false
	}
	if h.cfg.Host != "" {
		req.Host = h.cfg.Host
	}
	req.Header.Set("User-Agent", "ztgate-health-check")
	g := h.p.gen.Load()
	g.acquire()
	defer g.release()
	res, err := g.t.RoundTrip(req)
	if err != nil {
		if !h.p.stopped() {
			h.p.log.Debug("health check failed", LogEndpoint, e.addr, LogError, err)
		}
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	return res.StatusCode >= h.lo && res.StatusCode <= h.hi
}

// record applies one probe result. The first result after start decides
// at once; later flips need healthy_threshold / unhealthy_threshold
// results in a row.
func (h *healthChecker) record(e *endpoint, ok bool) {
	if ok {
		e.okStreak++
		e.failStreak = 0
	} else {
		e.failStreak++
		e.okStreak = 0
	}
	was := !e.unhealthy.Load()
	now := was
	switch {
	case !e.checked:
		now = ok
	case ok && !was && e.okStreak >= h.cfg.HealthyThreshold:
		now = true
	case !ok && was && e.failStreak >= h.cfg.UnhealthyThreshold:
		now = false
	}
	e.checked = true
	if now == was {
		if !ok {
			// keep the gauge right on the very first failed round
			h.p.publish(e)
		}
		return
	}
	e.unhealthy.Store(!now)
	h.p.publish(e)
	h.p.log.Info("endpoint health changed", LogEndpoint, e.addr, LogHealthy, now)
}

func (p *Pool) stopped() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}
