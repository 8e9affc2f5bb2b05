package main

import (
	"fmt"
	"os"
	"regexp"

	"strconv"
	"strings"
	"syscall"
	"time"
)

// measureReload starts ztgate with 10,000 routes, each with its own ALLOW
// policy, runs wrk -c16 through it (to /r1, proxied to the upstream) and
// sends SIGHUP 20 times, each time with the file changed (one route's
// body) and waiting for the "config reloaded" log line. The time to
// apply is the line's duration_ms (read → validate → compile → swap), and
// the time from the signal to the line, seen from outside. Every request
// that fails during the reloads (non-2xx, socket errors) is counted; the
// target is zero.
func (r *runner) measureReload(sc scenario, t *target, round int) (result, error) {
	srv, err := r.start(sc, t)
	if err != nil {
		return result{}, err
	}
	defer r.stop(srv)
	if err := r.ready(sc, t, srv); err != nil {
		return result{}, err
	}
	conf := confPath(r, "ztgate", sc, t, ".yaml")
	gen := 0
	reload := func() (float64, float64, error) {
		gen++
		if err := os.WriteFile(conf, []byte(ztgateYAML(r, sc, t, gen)), 0o644); err != nil {
			return 0, 0, err
		}
		ok0, bad0 := strings.Count(srv.all(), reloadedMsg), strings.Count(srv.all(), refusedMsg)
		start := time.Now()
		srv.cmd.Process.Signal(syscall.SIGHUP)
		deadline := start.Add(time.Minute)
		for time.Now().Before(deadline) {
			all := srv.all()
			if strings.Count(all, refusedMsg) > bad0 {
				return 0, 0, fmt.Errorf("reload refused:\n%s", srv.output())
			}
			if strings.Count(all, reloadedMsg) > ok0 {
				seen := float64(time.Since(start).Microseconds()) / 1000
				ms := reloadDur.FindAllStringSubmatch(all, -1)
				if len(ms) == 0 {
					return 0, 0, fmt.Errorf("no duration_ms in the reload line:\n%s", srv.output())
				}
				v, _ := strconv.ParseFloat(ms[len(ms)-1][1], 64)
				return v, seen, nil
			}
			time.Sleep(2 * time.Millisecond)
		}
		return 0, 0, fmt.Errorf("no %q within a minute of SIGHUP:\n%s", reloadedMsg, srv.output())
	}
	// Two reloads without load tell how long to run wrk for.
	var idle float64
	for i := 0; i < 2; i++ {
		_, seen, err := reload()
		if err != nil {
			return result{}, err
		}
		idle = max(idle, seen)
	}
	n := 20
	if r.o.smoke {
		n = 2
	}
	const gap = 200 * time.Millisecond
	span := time.Duration(float64(n)*(idle*1.5+float64(gap.Milliseconds()))) * time.Millisecond
	d := min(max(span+2*time.Second, 3*time.Second), time.Minute)
	type wrkOut struct {
		lr  loadResult
		err error
	}
	ch := make(chan wrkOut, 1)
	go func() {
		out, err := r.client("wrk", "-t1", "-c16", fmt.Sprintf("-d%ds", secs(d)), "--latency",
			fmt.Sprintf("https://%s:%d/r1", serverName, t.port))
		if err != nil {
			ch <- wrkOut{err: err}
			return
		}
		lr, err := parseWrk(out)
		ch <- wrkOut{lr, err}
	}()
	if r.o.smoke {
		time.Sleep(300 * time.Millisecond)
	} else {
		time.Sleep(time.Second) // wrk's connections are up and busy
	}
	res := result{}
	began := time.Now()
	for i := 0; i < n; i++ {
		v, seen, err := reload()
		if err != nil {
			<-ch
			return result{}, err
		}
		res.samples = append(res.samples, v)
		res.seen = append(res.seen, seen)
		time.Sleep(gap)
	}
	reloading := time.Since(began)
	w := <-ch
	if w.err != nil {
		return result{}, fmt.Errorf("wrk during reloads: %w", w.err)
	}
	if reloading+time.Second > d {
		return result{}, fmt.Errorf("the reloads took %s, longer than the load (%s): raise the estimate", reloading, d)
	}
	res.ops, res.errors, res.p50, res.p99 = int64(n), w.lr.errors, w.lr.p50, w.lr.p99
	res.reqs = w.lr.ops
	res.rate = median(res.seen)
	return res, nil
}

const (
	reloadedMsg = `"msg":"config reloaded"`
	refusedMsg  = `"msg":"config reload refused`
)

var reloadDur = regexp.MustCompile(`"msg":"config reloaded"[^\n]*?"duration_ms":(\d+(?:\.\d+)?)`)

func median(v []float64) float64 { return summarize(v).med }
