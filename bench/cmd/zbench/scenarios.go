package main

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// scenario is one measurement that every capable peer runs.
type scenario struct {
	name       string
	title      string
	unit       string // what one operation is
	portOffset int
	proxy      bool
	load       func(r *runner, port int, d time.Duration) (loadResult, error)
}

type loadResult struct {
	ops      int64
	rate     float64
	p50, p99 float64 // ms; h2load reports the mean in p50 and no p99
	errors   int64
}

func scenarios() []scenario {
	return []scenario{
		{name: "handshake-ecdsa", title: "Full TLS 1.3 handshakes, ECDSA P-256 (hsload, 50 workers, X25519, no resumption)",
			unit: "handshake", portOffset: 443, load: hsload},
		{name: "handshake-rsa", title: "Full TLS 1.3 handshakes, RSA-2048 (hsload, 50 workers, X25519, no resumption)",
			unit: "handshake", portOffset: 444, load: hsload},
		{name: "proxy-h1", title: "HTTPS keep-alive proxy, HTTP/1.1, 1 KiB upstream body (wrk -t1 -c64)",
			unit: "request", portOffset: 445, proxy: true, load: wrkLoad},
		{name: "proxy-h2", title: "HTTPS keep-alive proxy, HTTP/2, 1 KiB upstream body (h2load -t1 -c16 -m4)",
			unit: "request", portOffset: 446, proxy: true, load: h2loadLoad},
	}
}

func (r *runner) client(argv ...string) (string, error) {
	args := append([]string{"-c", "0"}, argv...)
	cmd := exec.CommandContext(r.ctx, "taskset", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v\n%s", argv[0], err, out)
	}
	return string(out), nil
}

var hsRe = regexp.MustCompile(`handshakes=(\d+) failures=(\d+) rate=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+)`)

func hsload(r *runner, port int, d time.Duration) (loadResult, error) {
	out, err := r.client(abs(r.o.hsload), "-addr", fmt.Sprintf("127.0.0.1:%d", port),
		"-sni", serverName, "-ca", r.env.ca, "-c", map[bool]string{true: "4", false: "50"}[r.o.smoke], "-d", d.String())
	if err != nil {
		return loadResult{}, err
	}
	return parseHsload(out)
}

func parseHsload(out string) (loadResult, error) {
	m := hsRe.FindStringSubmatch(out)
	if m == nil {
		return loadResult{}, fmt.Errorf("cannot parse hsload output: %q", out)
	}
	var lr loadResult
	lr.ops, _ = strconv.ParseInt(m[1], 10, 64)
	lr.errors, _ = strconv.ParseInt(m[2], 10, 64)
	lr.rate, _ = strconv.ParseFloat(m[3], 64)
	lr.p50, _ = strconv.ParseFloat(m[4], 64)
	lr.p99, _ = strconv.ParseFloat(m[5], 64)
	return lr, nil
}

func wrkLoad(r *runner, port int, d time.Duration) (loadResult, error) {
	secs := int(d.Seconds())
	if secs < 1 {
		secs = 1
	}
	conns := "-c64"
	if r.o.smoke {
		conns = "-c4" // smoke checks configs and parsing, not speed
	}
	out, err := r.client("wrk", "-t1", conns, fmt.Sprintf("-d%ds", secs), "--latency",
		fmt.Sprintf("https://%s:%d/", serverName, port))
	if err != nil {
		return loadResult{}, err
	}
	return parseWrk(out)
}

var (
	wrkReqs    = regexp.MustCompile(`(\d+) requests in ([\d.]+)(\w+),`)
	wrkRate    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkLat     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkSockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

func parseWrk(out string) (loadResult, error) {
	var lr loadResult
	m := wrkReqs.FindStringSubmatch(out)
	rm := wrkRate.FindStringSubmatch(out)
	if m == nil || rm == nil {
		return lr, fmt.Errorf("cannot parse wrk output: %q", out)
	}
	lr.ops, _ = strconv.ParseInt(m[1], 10, 64)
	lr.rate, _ = strconv.ParseFloat(rm[1], 64)
	if lr.ops == 0 {
		return lr, fmt.Errorf("wrk completed no request:\n%s", out)
	}
	for _, l := range wrkLat.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(l[2], 64)
		switch l[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if l[1] == "50" {
			lr.p50 = v
		} else {
			lr.p99 = v
		}
	}
	if e := wrkNon2xx.FindStringSubmatch(out); e != nil {
		n, _ := strconv.ParseInt(e[1], 10, 64)
		lr.errors += n
	}
	if e := wrkSockErr.FindStringSubmatch(out); e != nil {
		for _, s := range e[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			lr.errors += n
		}
	}
	return lr, nil
}

func h2loadLoad(r *runner, port int, d time.Duration) (loadResult, error) {
	secs := int(d.Seconds())
	if secs < 1 {
		secs = 1
	}
	conns := "-c16"
	if r.o.smoke {
		conns = "-c2"
	}
	out, err := r.client("h2load", "-t1", conns, "-m4", "-D", strconv.Itoa(secs),
		fmt.Sprintf("https://%s:%d/", serverName, port))
	if err != nil {
		return loadResult{}, err
	}
	return parseH2load(out)
}

var (
	h2Fin  = regexp.MustCompile(`finished in ([\d.]+)s, ([\d.]+) req/s`)
	h2Reqs = regexp.MustCompile(`requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored`)
	h2Lat  = regexp.MustCompile(`time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)`)
)

func parseH2load(out string) (loadResult, error) {
	var lr loadResult
	f := h2Fin.FindStringSubmatch(out)
	q := h2Reqs.FindStringSubmatch(out)
	if f == nil || q == nil {
		return lr, fmt.Errorf("cannot parse h2load output: %q", out)
	}
	lr.rate, _ = strconv.ParseFloat(f[2], 64)
	lr.ops, _ = strconv.ParseInt(q[2], 10, 64)
	failed, _ := strconv.ParseInt(q[3], 10, 64)
	errored, _ := strconv.ParseInt(q[4], 10, 64)
	lr.errors = failed + errored
	if l := h2Lat.FindStringSubmatch(out); l != nil {
		v, _ := strconv.ParseFloat(l[5], 64)
		lr.p50 = toMS(v, l[6]) // the mean
	}
	return lr, nil
}

func toMS(v float64, unit string) float64 {
	switch strings.TrimSpace(unit) {
	case "us":
		return v / 1000
	case "s":
		return v * 1000
	}
	return v
}
