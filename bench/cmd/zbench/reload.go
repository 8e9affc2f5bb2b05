package main

import (
	"fmt"
	"log"
	"os"
	"os/exec"
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
	// SIGHUP before ztgate installs its handler would end the process:
	// wait for the line it logs once it handles signals.
	if _, err := waitLine(srv, readyRe, 30*time.Second); err != nil {
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
	// wrk runs until the reloads are done (then SIGINT: wrk stops and
	// prints its totals), bounded at 3 minutes.
	var out strings.Builder
	wrk := exec.CommandContext(r.ctx, "taskset", "-c", "0", "wrk", "-t1", "-c16", "-d180s", "--latency",
		fmt.Sprintf("https://%s:%d/r1", serverName, t.port))
	wrk.Stdout, wrk.Stderr = &out, &out
	if err := wrk.Start(); err != nil {
		return result{}, err
	}
	exited := make(chan error, 1)
	go func() { exited <- wrk.Wait() }()
	stopWrk := func() error {
		wrk.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			return err
		case <-time.After(10 * time.Second):
			wrk.Process.Kill()
			return <-exited
		}
	}
	if r.o.smoke {
		time.Sleep(300 * time.Millisecond)
	} else {
		time.Sleep(time.Second) // wrk's connections are up and busy
	}
	log.Printf("  %-22s idle reload seen in %.0f ms; now %d reloads under wrk", t.label(), idle, n)
	res := result{}
	for i := 0; i < n; i++ {
		v, seen, err := reload()
		if err != nil {
			stopWrk()
			return result{}, err
		}
		res.samples = append(res.samples, v)
		res.seen = append(res.seen, seen)
		time.Sleep(gap)
		select {
		case <-exited:
			return result{}, fmt.Errorf("wrk ended during the reloads (after %d of %d):\n%s", i+1, n, out.String())
		default:
		}
	}
	time.Sleep(time.Second - gap)
	if err := stopWrk(); err != nil {
		return result{}, fmt.Errorf("wrk: %v\n%s", err, out.String())
	}
	lr, err := parseWrk(out.String())
	if err != nil {
		return result{}, err
	}
	res.ops, res.errors, res.p50, res.p99 = int64(n), lr.errors, lr.p50, lr.p99
	res.reqs = lr.ops
	res.rate = median(res.seen)
	return res, nil
}

const (
	reloadedMsg = `"msg":"config reloaded"`
	refusedMsg  = `"msg":"config reload refused`
)

var readyRe = regexp.MustCompile(`"msg":"ready to serve"`)

var reloadDur = regexp.MustCompile(`"msg":"config reloaded"[^\n]*?"duration_ms":(\d+(?:\.\d+)?)`)

func median(v []float64) float64 { return summarize(v).med }
