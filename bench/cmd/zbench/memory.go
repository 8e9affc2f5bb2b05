package main

import (
	"fmt"
	"log"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// measureMemory starts the peer (handshake config: TLS, a 2-byte answer),
// samples its RSS, has bench/cmd/idleconns open 10,000 keep-alive TLS
// connections (one GET each) from CPU 0, samples the RSS again once they
// are all idle, and checks at the end that the server kept every one.
// The result's rate is KiB of RSS per connection.
func (r *runner) measureMemory(sc scenario, t *target, round int) (result, error) {
	srv, err := r.start(sc, t)
	if err != nil {
		return result{}, err
	}
	defer r.stop(srv)
	if err := r.ready(sc, t, srv); err != nil {
		return result{}, err
	}
	n, settle := 10000, 3*time.Second
	if r.o.smoke {
		n, settle = 200, 300*time.Millisecond
	}
	time.Sleep(settle / 3)
	before, err := rssKiB(srv)
	if err != nil {
		return result{}, err
	}
	ic, err := r.spawn("idleconns", "0", nil, abs(r.o.idle), "-addr", fmt.Sprintf("127.0.0.1:%d", t.port),
		"-sni", serverName, "-ca", r.env.ca, "-n", strconv.Itoa(n), "-par", "64", "-hold", (settle + time.Second).String())
	if err != nil {
		return result{}, err
	}
	defer r.stop(ic)
	t0 := time.Now()
	up, err := waitLine(ic, upRe, 3*time.Minute)
	if err != nil {
		return result{}, fmt.Errorf("idleconns: %w\nserver: %s", err, srv.output())
	}
	est, _ := strconv.ParseInt(up[1], 10, 64)
	failed, _ := strconv.ParseInt(up[2], 10, 64)
	upAt := time.Now()
	time.Sleep(settle)
	after, err := rssKiB(srv)
	if err != nil {
		return result{}, err
	}
	done, err := waitLine(ic, doneRe, time.Minute)
	if err != nil {
		return result{}, fmt.Errorf("idleconns: %w\nserver: %s", err, srv.output())
	}
	alive, _ := strconv.ParseInt(done[2], 10, 64)
	log.Printf("  %-22s %d connections up in %s, checked in %s", t.label(), est, upAt.Sub(t0).Round(time.Millisecond), time.Since(upAt).Round(time.Millisecond))
	if est == 0 {
		return result{}, fmt.Errorf("idleconns established no connection:\n%s\nserver: %s", ic.output(), srv.output())
	}
	res := result{ops: est, errors: failed + (est - alive), rssBefore: before, rssAfter: after}
	res.rate = float64(after-before) / float64(est)
	return res, nil
}

var (
	upRe   = regexp.MustCompile(`up established=(\d+) failures=(\d+)`)
	doneRe = regexp.MustCompile(`done established=(\d+) alive=(\d+) failures=(\d+)`)
)

// waitLine waits for the process to print a line matching re.
func waitLine(p *proc, re *regexp.Regexp, max time.Duration) ([]string, error) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(p.output()); m != nil {
			return m, nil
		}
		select {
		case <-p.done:
			if m := re.FindStringSubmatch(p.output()); m != nil {
				return m, nil
			}
			return nil, fmt.Errorf("exited without %q:\n%s", re, p.output())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("no %q after %s:\n%s", re, max, p.output())
}

// rssKiB is the process's resident set (VmRSS) in KiB.
func rssKiB(p *proc) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("%s exited: %s", p.name, p.output())
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", p.cmd.Process.Pid)
}
