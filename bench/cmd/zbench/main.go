// Command zbench runs ztgate and its peers (nginx, haproxy, caddy) side by
// side on this machine and writes bench/results/REPORT.md and results.csv.
//
// Method (as in shared/notes/peer-baselines.md): every server is pinned to
// CPU 1 with one worker, every load generator and the upstream to CPU 0;
// peers run in turn, A B A B, for several rounds; the report gives the
// median, min and max, the server's own CPU time per operation (from
// /proc), and ztgate's ratio to each peer. Absolute numbers on a shared
// machine drift; the ratios within one run are what to read.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	rounds   int
	duration time.Duration
	warmup   time.Duration
	out      string
	work     string
	only     map[string]bool
	peers    map[string]bool
	smoke    bool
	ztgate   string
	hsload   string
	h3load   string
	idle     string
	dnsstub  string
	cmd      string
	plan     bool
}

func main() {
	var o options
	var only, peers string
	flag.IntVar(&o.rounds, "rounds", 3, "rounds per scenario (peers alternate within a round)")
	flag.DurationVar(&o.duration, "d", 10*time.Second, "measured duration of each run (2s..60s)")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "warm-up before each measured run")
	flag.StringVar(&o.out, "out", "bench/results", "directory for REPORT.md and results.csv")
	flag.StringVar(&only, "scenarios", "", "comma-separated scenario names (default: all)")
	flag.StringVar(&peers, "peers", "", "comma-separated peers (default: all installed)")
	flag.BoolVar(&o.smoke, "smoke", false, "one tiny round of each scenario: checks that every config starts and every parser reads its tool's output")
	flag.StringVar(&o.ztgate, "ztgate", "bin/ztgate", "ztgate binary")
	flag.StringVar(&o.hsload, "hsload", "bin/hsload", "hsload binary (bench/cmd/hsload)")
	flag.StringVar(&o.h3load, "h3load", "bin/h3load", "h3load binary (bench/cmd/h3load)")
	flag.StringVar(&o.idle, "idleconns", "bin/idleconns", "idleconns binary (bench/cmd/idleconns)")
	flag.StringVar(&o.dnsstub, "dnsstub", "bin/dnsstub", "dnsstub binary (bench/cmd/dnsstub)")
	flag.StringVar(&o.cmd, "cmd", "go run ./bench/cmd/zbench", "how this run was started, for the report (the Makefile says `make bench`)")
	plan := flag.Bool("plan", false, "print the planned targets and duration, run nothing")
	keep := flag.Bool("keep", false, "keep the work directory (configs, logs) for debugging")
	flag.Parse()
	o.only, o.peers = set(only), set(peers)
	o.plan = *plan
	if o.smoke {
		o.rounds, o.duration, o.warmup = 1, time.Second, 0
	}
	if o.duration < time.Second || o.duration > time.Minute {
		log.Fatal("zbench: -d must be between 1s and 60s")
	}
	dir, err := os.MkdirTemp("", "zbench-")
	if err != nil {
		log.Fatal(err)
	}
	o.work = dir
	if *keep {
		log.Printf("zbench: work directory %s is kept", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	r := &runner{o: o, ctx: ctx}
	defer r.stopAll() // stops exactly the processes it started, even on failure
	if err := r.run(); err != nil {
		r.stopAll()
		if !*keep {
			os.RemoveAll(dir)
		}
		log.Fatalf("zbench: %v", err)
	}
}

func set(s string) map[string]bool {
	if s == "" {
		return nil
	}
	m := map[string]bool{}
	for _, x := range strings.Split(s, ",") {
		m[strings.TrimSpace(x)] = true
	}
	return m
}

type runner struct {
	o     options
	ctx   context.Context
	procs []*proc
	// clientCPU adds up the CPU time of every load generator run.
	clientCPU time.Duration
	retries   int
	results   []result
	env       *env
	missing   map[string]string // target label → why it is not available in this build
	// profiles are the CPU profiles of ztgate, by scenario/target.
	profiles map[string]profileSummary
}

func (r *runner) run() error {
	env, err := setup(r)
	if err != nil {
		return err
	}
	r.env = env
	r.missing = map[string]string{}
	if r.o.plan {
		for _, sc := range scenarios() {
			if r.o.only == nil || r.o.only[sc.name] {
				var l []string
				for _, t := range r.targetsFor(sc) {
					l = append(l, t.label())
				}
				fmt.Printf("%-16s %s\n", sc.name, strings.Join(l, ", "))
			}
		}
		fmt.Printf("about %s\n", r.estimate().Round(time.Second))
		return nil
	}
	log.Printf("zbench: about %s planned (%d rounds of %s + %s warm-up per target); work directory %s",
		r.estimate().Round(time.Minute), r.o.rounds, r.o.duration, r.o.warmup, r.o.work)
	began := time.Now()
	for _, sc := range scenarios() {
		if r.o.only != nil && !r.o.only[sc.name] {
			continue
		}
		t0 := time.Now()
		if err := r.scenario(sc); err != nil {
			return fmt.Errorf("%s: %w", sc.name, err)
		}
		log.Printf("scenario %s took %s (total %s)", sc.name, time.Since(t0).Round(time.Second), time.Since(began).Round(time.Second))
	}
	if r.o.smoke {
		return r.checkSmoke()
	}
	return writeReport(r, time.Since(began))
}

// scenario runs every target of sc in turn, round after round. A peer
// that cannot do the work, or a ztgate feature this build lacks, gets one
// result row that says so instead of numbers.
func (r *runner) scenario(sc scenario) error {
	targets := r.targetsFor(sc)
	for _, p := range sc.cannotPeers() {
		if r.o.peers == nil || r.o.peers[p] {
			r.results = append(r.results, result{scenario: sc.name, peer: p, unit: sc.unit, note: "cannot: " + sc.cannot[p]})
		}
	}
	if len(targets) == 0 {
		return nil
	}
	var labels []string
	for _, t := range targets {
		labels = append(labels, t.label())
	}
	log.Printf("scenario %s: %s, %d rounds of %s", sc.name, strings.Join(labels, ", "), r.o.rounds, r.o.duration)
	rounds := r.o.rounds
	if sc.kind == "reload" {
		rounds = 1 // one target; its 20 reloads are the samples
	}
	for round := 1; round <= rounds; round++ {
		for _, t := range targets {
			if err := r.ctx.Err(); err != nil {
				return err
			}
			if why, ok := r.missing[sc.name+"/"+t.label()]; ok {
				_ = why // already recorded once
				continue
			}
			measure := r.measure
			switch sc.kind {
			case "memory":
				measure = r.measureMemory
			case "reload":
				measure = r.measureReload
			}
			res, err := measure(sc, t, round)
			// As in peer-baselines: a run during which other processes
			// used more than 15 % of a core is done again, once, while
			// the retry budget lasts (it keeps make bench within time).
			if err == nil && !r.o.smoke && res.foreignPct > maxForeign && r.retries < maxRetries {
				r.retries++
				log.Printf("  %-22s round %d: foreign CPU %.0f %% of a core, measuring again (retry %d of %d)", t.label(), round, res.foreignPct, r.retries, maxRetries)
				res, err = measure(sc, t, round)
			}
			var na *notAvailable
			if errors.As(err, &na) {
				log.Printf("  %-22s not available in this build: %s", t.label(), na.why)
				r.missing[sc.name+"/"+t.label()] = na.why
				r.results = append(r.results, result{scenario: sc.name, peer: t.p.name, variant: t.variant, unit: sc.unit,
					note: "not available in this build: " + na.why})
				continue
			}
			if err != nil && (r.o.smoke || r.ctx.Err() != nil) {
				return fmt.Errorf("%s round %d: %w", t.label(), round, err)
			}
			if err != nil {
				// A long run keeps going: the report shows the failure
				// in this target's row, the log has the details.
				log.Printf("  %-22s round %d FAILED: %v", t.label(), round, err)
				r.results = append(r.results, result{scenario: sc.name, peer: t.p.name, variant: t.variant, unit: sc.unit,
					note: fmt.Sprintf("round %d failed: %s", round, firstLine(err.Error()))})
				continue
			}
			res.scenario, res.peer, res.variant, res.round, res.unit = sc.name, t.p.name, t.variant, round, sc.unit
			log.Printf("  %-22s round %d: %s", t.label(), round, res.summary())
			r.results = append(r.results, res)
		}
	}
	return nil
}

// maxForeign is the CPU (% of one core) that processes zbench did not
// start may use during a run before the run is repeated.
const maxForeign = 15

// maxRetries bounds the runs done again in one zbench run.
const maxRetries = 4

// machineBusy is the CPU time all processes used so far (/proc/stat: all
// but idle and iowait).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 8 { // idle, iowait; guest time is already in user
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / 100
}

// helpersCPU is the CPU time of the upstream, origin and DNS stub, except
// the one measured as the server.
func (r *runner) helpersCPU(server *proc) time.Duration {
	var d time.Duration
	for _, p := range []*proc{r.env.upstream, r.env.origin, r.env.stub} {
		if p != nil && p != server {
			c, _ := p.cpu()
			d += c
		}
	}
	return d
}

// estimate is the planned wall time: every target's runs plus about a
// second each to start and stop a server.
func (r *runner) estimate() time.Duration {
	var total time.Duration
	for _, sc := range scenarios() {
		if r.o.only != nil && !r.o.only[sc.name] {
			continue
		}
		per := r.o.duration + time.Second/3
		if !sc.noWarmup {
			per += r.o.warmup
		}
		rounds := r.o.rounds
		switch sc.kind {
		case "memory":
			per = 15 * time.Second
		case "reload":
			per, rounds = time.Minute, 1
		}
		if r.o.smoke && sc.kind != "" {
			per = 2 * time.Second
		}
		if sc.name == "egress-bulk" {
			per = bulkDuration(r.o.duration) + time.Second/3
		}
		total += time.Duration(len(r.targetsFor(sc))*rounds) * per
	}
	return total
}

// targetsFor lists the peers (and their variants) that run sc.
func (r *runner) targetsFor(sc scenario) []*target {
	var out []*target
	for _, name := range sc.peers {
		if r.o.peers != nil && !r.o.peers[name] {
			continue
		}
		p := r.env.peer(name)
		if p == nil || !p.installed() {
			continue
		}
		vs := sc.variants[name]
		if len(vs) == 0 {
			vs = []string{""}
		}
		for _, v := range vs {
			t := &target{p: p, variant: v, port: p.base + sc.portOffset}
			if p.shared != nil {
				t.port = originPort // "direct": the load goes to the origin itself
			}
			out = append(out, t)
		}
	}
	return out
}

// notAvailable marks a ztgate feature this build does not have: the
// config is refused by `ztgate validate`, or accepted but not acted on.
type notAvailable struct{ why string }

func (e *notAvailable) Error() string { return "not available in this build: " + e.why }

// measure starts the target for the scenario, checks that it really does
// the scenario's work, warms up, runs the load generator, and reads the
// server's CPU time.
func (r *runner) measure(sc scenario, t *target, round int) (result, error) {
	srv, err := r.start(sc, t)
	if err != nil {
		return result{}, err
	}
	if t.p.shared == nil {
		defer r.stop(srv)
	}
	if err := r.ready(sc, t, srv); err != nil {
		return result{}, err
	}
	if r.o.warmup > 0 && !sc.noWarmup {
		if _, err := sc.load(r, t, r.o.warmup); err != nil {
			return result{}, fmt.Errorf("warm-up: %w\n%s", err, srv.output())
		}
	}
	prof := r.profile(sc, t, round)
	cpu0, err := srv.cpu()
	if err != nil {
		return result{}, err
	}
	busy0, helpers0, client0, self0 := machineBusy(), r.helpersCPU(srv), r.clientCPU, selfCPU()
	start := time.Now()
	lr, err := sc.load(r, t, r.o.duration)
	if err != nil {
		return result{}, fmt.Errorf("load: %w\n%s", err, srv.output())
	}
	wall := time.Since(start)
	cpu1, err := srv.cpu()
	if err != nil {
		return result{}, err
	}
	foreign := machineBusy() - busy0 - (r.helpersCPU(srv) - helpers0) - (r.clientCPU - client0) - (selfCPU() - self0) - (cpu1 - cpu0)
	if err := prof.wait(); err != nil {
		log.Printf("  profile of %s/%s: %v", sc.name, t.label(), err)
	}
	res := result{rate: lr.rate, ops: lr.ops, p50: lr.p50, p99: lr.p99, errors: lr.errors}
	res.foreignPct = 100 * foreign.Seconds() / wall.Seconds()
	used := (cpu1 - cpu0).Seconds()
	res.cpuPct = 100 * used / wall.Seconds()
	if lr.ops > 0 {
		res.usPerOp = 1e6 * used / float64(lr.ops)
	}
	return res, nil
}

// ready waits for the target's port, then runs the scenario's checks
// (that ztgate really verifies tokens, that the allowlist refuses, that
// the cache is filled).
func (r *runner) ready(sc scenario, t *target, srv *proc) error {
	wait := 10 * time.Second
	if t.p.name == "ztgate" && sc.feature != "" {
		// The admin server opens once every component has applied the
		// config, so by then the feature's listener is open or never
		// will be.
		if err := waitPort(r.ctx, ztAdminPort, 10*time.Second); err != nil {
			return fmt.Errorf("%s did not start: %w\n%s", t.label(), err, srv.output())
		}
		wait = time.Second
	}
	if err := waitPort(r.ctx, t.port, wait); err != nil {
		if t.p.name == "ztgate" && sc.feature != "" {
			return &notAvailable{fmt.Sprintf("the config validates but nothing listens on %d (%s not wired into cmd/ztgate?)", t.port, sc.feature)}
		}
		return fmt.Errorf("%s did not start: %w\n%s", t.label(), err, srv.output())
	}
	if sc.prepare != nil {
		if err := sc.prepare(r, t); err != nil {
			var na *notAvailable
			if errors.As(err, &na) {
				return err
			}
			return fmt.Errorf("%s: %w\n%s", t.label(), err, srv.output())
		}
	}
	return nil
}

func (r *runner) checkSmoke() error {
	var bad []string
	seen := map[string]bool{}
	for _, res := range r.results {
		key := res.scenario + "/" + res.label()
		if res.note != "" {
			fmt.Printf("zbench smoke: %s: %s\n", key, res.note)
			continue
		}
		seen[key] = true
		// (RSS per connection may round to zero or below with the smoke
		// test's 200 connections: only the count is checked there.)
		if res.ops == 0 || res.rate <= 0 && res.rssAfter == 0 {
			bad = append(bad, fmt.Sprintf("%s: no operations parsed", key))
		}
		if res.errors > 0 && res.scenario == "reload" {
			bad = append(bad, fmt.Sprintf("%s: %d failed requests during reloads", key, res.errors))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("smoke failed:\n  %s", strings.Join(bad, "\n  "))
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Printf("zbench smoke: %d runs ok: %s\n", len(keys), strings.Join(keys, " "))
	return nil
}

// abs makes a path absolute relative to the working directory.
func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

// lookPath returns the tool's path or "".
func lookPath(name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}
