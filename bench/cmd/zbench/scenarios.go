package main

import (
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
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
	// peers run the scenario in this order; cannot lists the peers that
	// have no way to do the same work, with the reason the report shows.
	peers    []string
	cannot   map[string]string
	variants map[string][]string // peer → variants (default: one plain run)
	// ref is the ztgate variant that ratios are computed from.
	ref string
	// feature names the ztgate part the scenario needs; when its
	// listener never opens, the build lacks it (not wired yet).
	feature string
	// baseline names another scenario whose rows this table repeats for
	// comparison (the JWT table shows proxy-h1 as "no JWT").
	baseline string
	// profile: take a CPU profile of ztgate during the last round.
	profile bool
	// noWarmup: the scenario needs no warm-up run: every operation is a
	// new connection (handshakes, egress connections), one download, or
	// DNS, which fills its cache in prepare. Warm-ups are for keep-alive
	// connections and upstream pools.
	noWarmup bool
	load     func(r *runner, t *target, d time.Duration) (loadResult, error)
	// prepare runs after the server is up, before the warm-up: checks
	// that it does the scenario's work, fills caches.
	prepare func(r *runner, t *target) error
	// kind selects the measurement and the report table: "" (rates),
	// "memory", "reload".
	kind string
}

func (sc scenario) cannotPeers() []string {
	var out []string
	for p := range sc.cannot {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

type loadResult struct {
	ops      int64
	rate     float64
	p50, p99 float64 // ms; h2load and dnsperf report the mean in p50 and no p99
	errors   int64
}

var (
	allHTTP = []string{"ztgate", "nginx", "haproxy", "caddy"}
	noJWT   = "no built-in JWT verification (needs a module, Lua/njs or a plugin)"
)

func scenarios() []scenario {
	return []scenario{
		{name: "handshake-ecdsa", title: "Full TLS 1.3 handshakes, ECDSA P-256 (hsload, 50 workers, X25519, no resumption)",
			unit: "handshake", portOffset: 443, peers: allHTTP, profile: true, noWarmup: true, load: hsload},
		{name: "handshake-rsa", title: "Full TLS 1.3 handshakes, RSA-2048 (hsload, 50 workers, X25519, no resumption); " +
			"ztgate signs with Go's crypto (`go`, the default) or OpenSSL 3 through accel (`openssl`)",
			unit: "handshake", portOffset: 444, peers: allHTTP, profile: true, noWarmup: true, load: hsload,
			// accel: Go's RSA (as caddy) and the OpenSSL provider (issue 8's goal).
			variants: map[string][]string{"ztgate": {"go", "openssl"}}, ref: "openssl"},
		{name: "proxy-h1", title: "HTTPS keep-alive proxy, HTTP/1.1, 1 KiB upstream body (wrk -t1 -c64)",
			unit: "request", portOffset: 445, proxy: true, peers: allHTTP, profile: true, load: wrkLoad},
		{name: "proxy-h2", title: "HTTPS keep-alive proxy, HTTP/2, 1 KiB upstream body (h2load -t1 -c16 -m4)",
			unit: "request", portOffset: 446, proxy: true, peers: allHTTP, profile: true, load: h2loadLoad},
		{name: "jwt-h1", title: "proxy-h1 with an RS256 JWT (RSA-2048, made by zbench) verified on every request " +
			"(wrk -t1 -c64, one token reused). ztgate: `jwt nocache` verifies every request (token_cache_size: -1, the same work as haproxy), " +
			"`jwt` uses the default verified-token cache, `chain` is the full policy chain (JWT + 21 Istio-style rules in 4 policies + one Rego policy). " +
			"haproxy: http_auth_bearer → jwt_header_query alg = RS256 → jwt_verify with the public key, else 403. " +
			"The `no JWT` rows are proxy-h1 from this same run.",
			unit: "request", portOffset: 447, proxy: true, peers: []string{"ztgate", "haproxy"},
			variants: map[string][]string{"ztgate": {"jwt nocache", "jwt", "chain"}, "haproxy": {"jwt"}},
			cannot:   map[string]string{"nginx": noJWT + " in nginx 1.22 open source", "caddy": noJWT},
			ref:      "jwt nocache", feature: "authn", baseline: "proxy-h1", profile: true, load: wrkLoad, prepare: checkJWT},
		{name: "h3", title: "HTTPS keep-alive proxy, HTTP/3, 1 KiB upstream body (bench/cmd/h3load: 16 QUIC connections × 4 streams, CA-verified)",
			unit: "request", portOffset: 448, proxy: true, peers: []string{"ztgate", "caddy"},
			cannot:  map[string]string{"nginx": "nginx 1.22 (Debian 12) has no HTTP/3", "haproxy": "haproxy 2.6 (Debian 12) is built without QUIC"},
			profile: true, load: h3Load},
		{name: "egress-conn", title: "Egress SNI passthrough: new TLS connections/s through the proxy to a TLS origin on CPU 0 " +
			"(hsload -c 50: full handshake with the origin, one GET, close), 1,001-name allowlist. " +
			"`ztgate transparent` is the like-for-like row (ratios from it): the client connects to the origin's address, " +
			"nftables REDIRECT hands the connection to the egress `transparent` listener, which peeks the ClientHello, checks the SNI against the allowlist " +
			"and that the original destination is an address of that name, as nginx ssl_preread and haproxy req.ssl_sni route by SNI with no client support; " +
			"it runs in a network namespace zbench creates, with its own origin and DNS stub (same configs, same CPUs). " +
			"`ztgate connect` is the egress `connect` listener (CONNECT allowed.test:19443, then the ClientHello is peeked and checked; one more round trip). " +
			"`direct` is the origin alone, its CPU in the µs column.",
			unit: "conn", portOffset: 500, peers: []string{"direct", "ztgate", "nginx", "haproxy"},
			variants: map[string][]string{"ztgate": {"connect", "transparent"}}, ref: "transparent",
			cannot:  map[string]string{"caddy": "SNI passthrough needs the caddy-l4 plugin, not in a stock build"},
			feature: "egress", profile: true, noWarmup: true, load: egressConnLoad, prepare: checkAllowlist},
		{name: "egress-bulk", title: "Egress SNI passthrough: one TLS download of a 4 GiB sparse file through the proxy (curl, cut after min(-d, 5 s)), MiB/s; µs/op is the proxy's CPU µs per MiB (`direct`: the origin's)",
			unit: "MiB", portOffset: 500, peers: []string{"direct", "ztgate", "nginx", "haproxy"},
			cannot:  map[string]string{"caddy": "SNI passthrough needs the caddy-l4 plugin, not in a stock build"},
			feature: "egress", profile: true, noWarmup: true, load: bulkLoad},
		{name: "dns", title: "DNS cache hits over UDP (dnsperf -c 4 -T 1 -q 200, 500 names, one warm-up pass so every query is a hit); " +
			"ztgate dnsguard with tunneling detection on (`detect`, mode block) and off (`nodetect`)",
			unit: "query", portOffset: 53, peers: []string{"ztgate", "coredns", "dnsmasq"},
			variants: map[string][]string{"ztgate": {"detect", "nodetect"}},
			ref:      "detect", feature: "dnsguard", profile: true, noWarmup: true, load: dnsperfLoad, prepare: warmDNS},
		{name: "dns-miss", title: "DNS cache misses over UDP (dnsperf -c 4 -T 1 -q 200): every query is a new name (xN.dM.miss-test, ten per registered domain dM.miss-test), " +
			"so each one goes to the upstream stub on CPU 0; a fresh server per run. ztgate dnsguard with tunneling detection on (`detect`) and off (`nodetect`)",
			unit: "query", portOffset: 53, peers: []string{"ztgate", "coredns", "dnsmasq"},
			variants: map[string][]string{"ztgate": {"detect", "nodetect"}},
			ref:      "detect", feature: "dnsguard", profile: true, noWarmup: true, load: dnsperfMissLoad, prepare: checkMissDNS},
		{name: "memory", title: "Resident memory holding idle TLS 1.3 keep-alive connections (bench/cmd/idleconns: one GET each, then idle; " +
			"RSS sampled after they are all up; a second GET on each at the end proves they were kept)",
			unit: "KiB/conn", portOffset: 449, peers: allHTTP, kind: "memory"},
		{name: "reload", title: "Reload: SIGHUP with 10,000 routes (each with its own ALLOW policy) while wrk -c16 runs through the gateway; 20 reloads per round",
			unit: "reload", portOffset: 450, proxy: true, peers: []string{"ztgate"}, kind: "reload"},
	}
}

// client runs a load generator pinned to CPU 0.
func (r *runner) client(argv ...string) (string, error) { return r.clientOK(nil, argv...) }

// clientOK is client that also accepts the given exit codes (curl's 28:
// the transfer was cut by --max-time, as intended).
func (r *runner) clientOK(ok []int, argv ...string) (string, error) {
	args := append([]string{"-c", "0"}, argv...)
	cmd := exec.CommandContext(r.ctx, "taskset", args...)
	out, err := cmd.CombinedOutput()
	if ps := cmd.ProcessState; ps != nil {
		r.clientCPU += ps.UserTime() + ps.SystemTime()
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			for _, c := range ok {
				if ee.ExitCode() == c {
					return string(out), nil
				}
			}
		}
		return string(out), fmt.Errorf("%s: %v\n%s", argv[0], err, out)
	}
	return string(out), nil
}

func secs(d time.Duration) int {
	if s := int(d.Round(time.Second).Seconds()); s > 0 {
		return s
	}
	return 1
}

func hsload(r *runner, t *target, d time.Duration) (loadResult, error) {
	out, err := r.client(abs(r.o.hsload), "-addr", fmt.Sprintf("127.0.0.1:%d", t.port),
		"-sni", serverName, "-ca", r.env.ca, "-c", r.conc(50, 4), "-d", d.String())
	if err != nil {
		return loadResult{}, err
	}
	return parseKV(out, "handshakes")
}

// conc is the concurrency: full in a measurement, small in the smoke test
// (which checks configs and parsing, not speed).
func (r *runner) conc(full, smoke int) string {
	if r.o.smoke {
		return strconv.Itoa(smoke)
	}
	return strconv.Itoa(full)
}

var kvRe = regexp.MustCompile(`(\w+)=([\d.]+) failures=(\d+) rate=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+)`)

// parseKV reads the one-line summary of hsload and h3load.
func parseKV(out, what string) (loadResult, error) {
	m := kvRe.FindStringSubmatch(out)
	if m == nil || m[1] != what {
		return loadResult{}, fmt.Errorf("cannot parse the %s line: %q", what, out)
	}
	var lr loadResult
	lr.ops, _ = strconv.ParseInt(m[2], 10, 64)
	lr.errors, _ = strconv.ParseInt(m[3], 10, 64)
	lr.rate, _ = strconv.ParseFloat(m[4], 64)
	lr.p50, _ = strconv.ParseFloat(m[5], 64)
	lr.p99, _ = strconv.ParseFloat(m[6], 64)
	return lr, nil
}

func wrkLoad(r *runner, t *target, d time.Duration) (loadResult, error) {
	args := []string{"wrk", "-t1", "-c" + r.conc(64, 4), fmt.Sprintf("-d%ds", secs(d)), "--latency"}
	if strings.HasPrefix(t.variant, "jwt") || t.variant == "chain" {
		args = append(args, "-H", "Authorization: Bearer "+r.env.jwt.token)
	}
	out, err := r.client(append(args, fmt.Sprintf("https://%s:%d/", serverName, t.port))...)
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
		v = toMS(v, l[3])
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

func h2loadLoad(r *runner, t *target, d time.Duration) (loadResult, error) {
	out, err := r.client("h2load", "-t1", "-c"+r.conc(16, 2), "-m4", "-D", strconv.Itoa(secs(d)),
		fmt.Sprintf("https://%s:%d/", serverName, t.port))
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

func h3Load(r *runner, t *target, d time.Duration) (loadResult, error) {
	out, err := r.client(abs(r.o.h3load), "-url", fmt.Sprintf("https://%s:%d/", serverName, t.port),
		"-ca", r.env.ca, "-c", r.conc(16, 2), "-m", "4", "-d", d.String())
	if err != nil {
		return loadResult{}, err
	}
	return parseKV(out, "requests")
}

// egressConnLoad opens new TLS connections to the origin through the
// proxy: SNI routing for nginx and haproxy, CONNECT for ztgate connect,
// nftables REDIRECT in a namespace for ztgate transparent.
func egressConnLoad(r *runner, t *target, d time.Duration) (loadResult, error) {
	if t.variant == "transparent" {
		out, err := transparentLoad(r, d)
		if err != nil {
			return loadResult{}, err
		}
		return parseKV(out, "handshakes")
	}
	args := []string{abs(r.o.hsload), "-sni", egressName, "-ca", r.env.ca, "-c", r.conc(50, 4), "-d", d.String()}
	switch t.p.name {
	case "ztgate":
		args = append(args, "-addr", fmt.Sprintf("127.0.0.1:%d", t.port), "-connect", fmt.Sprintf("%s:%d", egressName, originPort))
	default: // direct's port is the origin's
		args = append(args, "-addr", fmt.Sprintf("127.0.0.1:%d", t.port))
	}
	out, err := r.client(args...)
	if err != nil {
		return loadResult{}, err
	}
	return parseKV(out, "handshakes")
}

// bulkLoad downloads the origin's big sparse file through the proxy with
// curl for d (curl exits 28 when --max-time cuts it, as intended).
func bulkLoad(r *runner, t *target, d time.Duration) (loadResult, error) {
	args := []string{"curl", "-s", "-o", "/dev/null", "--max-time", strconv.Itoa(secs(bulkDuration(d))),
		"-w", "%{speed_download} %{size_download} %{http_code}\n", "--cacert", r.env.ca}
	if t.p.name == "ztgate" {
		args = append(args, "-x", fmt.Sprintf("http://127.0.0.1:%d", t.port), fmt.Sprintf("https://%s:%d/big.bin", egressName, originPort))
	} else {
		args = append(args, "--resolve", fmt.Sprintf("%s:%d:127.0.0.1", egressName, t.port), fmt.Sprintf("https://%s:%d/big.bin", egressName, t.port))
	}
	out, err := r.clientOK([]int{28}, args...)
	if err != nil {
		return loadResult{}, err
	}
	return parseCurl(out)
}

// bulkDuration bounds one download: long enough to reach a steady rate,
// short enough to keep `make bench` under 20 minutes.
func bulkDuration(d time.Duration) time.Duration { return min(d, 5*time.Second) }

var curlRe = regexp.MustCompile(`(?m)^([\d.]+) (\d+) (\d+)$`)

func parseCurl(out string) (loadResult, error) {
	m := curlRe.FindStringSubmatch(out)
	if m == nil {
		return loadResult{}, fmt.Errorf("cannot parse curl -w output: %q", out)
	}
	bps, _ := strconv.ParseFloat(m[1], 64)
	size, _ := strconv.ParseFloat(m[2], 64)
	if m[3] != "200" || size == 0 {
		return loadResult{}, fmt.Errorf("download failed: HTTP %s, %s bytes", m[3], m[2])
	}
	return loadResult{ops: int64(size/(1<<20) + 0.5), rate: bps / (1 << 20)}, nil
}

func dnsperfLoad(r *runner, t *target, d time.Duration) (loadResult, error) {
	return dnsperfRun(r, t, r.env.queries, d)
}

// dnsperfMissLoad is dnsperfLoad over fresh names: every query misses
// the cache (dnsperf reads the file once, in order, within one run).
func dnsperfMissLoad(r *runner, t *target, d time.Duration) (loadResult, error) {
	return dnsperfRun(r, t, r.env.missQueries, d)
}

func dnsperfRun(r *runner, t *target, file string, d time.Duration) (loadResult, error) {
	out, err := r.client("dnsperf", "-s", "127.0.0.1", "-p", strconv.Itoa(t.port), "-d", file,
		"-l", strconv.Itoa(secs(d)), "-c", r.conc(4, 1), "-T", "1", "-q", r.conc(200, 20))
	if err != nil {
		return loadResult{}, err
	}
	return parseDnsperf(out)
}

// checkMissDNS resolves a few fresh names (not in the measured file)
// through the server: each must be answered NOERROR by the stub's
// wildcard, so that the measured queries are real upstream round trips.
func checkMissDNS(r *runner, t *target) error {
	return dnsperfOnce(r, t, r.env.missProbe, 20, "fresh names")
}

// dnsperfOnce sends every name of file once and requires a NOERROR
// answer to each.
func dnsperfOnce(r *runner, t *target, file string, outstanding int, what string) error {
	out, err := r.client("dnsperf", "-s", "127.0.0.1", "-p", strconv.Itoa(t.port), "-d", file, "-n", "1", "-c", "1", "-q", strconv.Itoa(outstanding))
	if err != nil {
		return err
	}
	lr, err := parseDnsperf(out)
	if err != nil {
		return err
	}
	if lr.errors > 0 {
		return fmt.Errorf("%s: %d of %d queries lost or not NOERROR:\n%s", what, lr.errors, lr.ops, out)
	}
	return nil
}

var (
	dpDone = regexp.MustCompile(`Queries completed:\s+(\d+)`)
	dpLost = regexp.MustCompile(`Queries lost:\s+(\d+)`)
	dpQPS  = regexp.MustCompile(`Queries per second:\s+([\d.]+)`)
	dpLat  = regexp.MustCompile(`Average Latency \(s\):\s+([\d.]+)`)
	dpCode = regexp.MustCompile(`Response codes:\s+(.*)`)
	dpRC   = regexp.MustCompile(`([A-Z]+) (\d+)`)
)

func parseDnsperf(out string) (loadResult, error) {
	var lr loadResult
	done, qps := dpDone.FindStringSubmatch(out), dpQPS.FindStringSubmatch(out)
	if done == nil || qps == nil {
		return lr, fmt.Errorf("cannot parse dnsperf output: %q", out)
	}
	lr.ops, _ = strconv.ParseInt(done[1], 10, 64)
	lr.rate, _ = strconv.ParseFloat(qps[1], 64)
	if l := dpLost.FindStringSubmatch(out); l != nil {
		n, _ := strconv.ParseInt(l[1], 10, 64)
		lr.errors += n
	}
	if c := dpCode.FindStringSubmatch(out); c != nil {
		for _, rc := range dpRC.FindAllStringSubmatch(c[1], -1) {
			if rc[1] != "NOERROR" {
				n, _ := strconv.ParseInt(rc[2], 10, 64)
				lr.errors += n
			}
		}
	}
	if l := dpLat.FindStringSubmatch(out); l != nil {
		v, _ := strconv.ParseFloat(l[1], 64)
		lr.p50 = v * 1000 // the mean
	}
	if lr.ops == 0 {
		return lr, fmt.Errorf("dnsperf completed no query:\n%s", out)
	}
	return lr, nil
}

// warmDNS sends every name once, so that the measured queries are cache
// hits, and checks that the answers are right.
func warmDNS(r *runner, t *target) error {
	return dnsperfOnce(r, t, r.env.queries, 50, "warm-up pass")
}
