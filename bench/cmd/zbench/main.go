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
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
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
	flag.StringVar(&o.hsload, "hsload", "bin/hsload", "hsload binary")
	flag.Parse()
	o.only, o.peers = set(only), set(peers)
	if o.smoke {
		o.rounds, o.duration, o.warmup = 1, 2*time.Second, 0
	}
	if o.duration < time.Second || o.duration > time.Minute {
		log.Fatal("zbench: -d must be between 1s and 60s")
	}
	dir, err := os.MkdirTemp("", "zbench-")
	if err != nil {
		log.Fatal(err)
	}
	o.work = dir
	defer os.RemoveAll(dir)

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	r := &runner{o: o, ctx: ctx}
	defer r.stopAll() // stops exactly the processes it started, even on failure
	if err := r.run(); err != nil {
		r.stopAll()
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
	o       options
	ctx     context.Context
	procs   []*proc
	results []result
	env     *env
}

func (r *runner) run() error {
	env, err := setup(r)
	if err != nil {
		return err
	}
	r.env = env
	for _, sc := range scenarios() {
		if r.o.only != nil && !r.o.only[sc.name] {
			continue
		}
		if err := r.scenario(sc); err != nil {
			return fmt.Errorf("%s: %w", sc.name, err)
		}
	}
	if r.o.smoke {
		return r.checkSmoke()
	}
	return writeReport(r.o.out, r.results, env.versions, r.o)
}

// scenario runs every peer of sc in turn, round after round.
func (r *runner) scenario(sc scenario) error {
	peers := r.peersFor(sc)
	if len(peers) == 0 {
		return nil
	}
	log.Printf("scenario %s: peers %s, %d rounds of %s", sc.name, strings.Join(names(peers), ", "), r.o.rounds, r.o.duration)
	for round := 1; round <= r.o.rounds; round++ {
		for _, p := range peers {
			if err := r.ctx.Err(); err != nil {
				return err
			}
			res, err := r.measure(sc, p, round)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", p.name, round, err)
			}
			log.Printf("  %-10s round %d: %s", p.name, round, res.summary())
			r.results = append(r.results, res)
		}
	}
	return nil
}

func (r *runner) peersFor(sc scenario) []*peer {
	var out []*peer
	for _, p := range r.env.peers {
		if r.o.peers != nil && !r.o.peers[p.name] {
			continue
		}
		if p.supports(sc.name) {
			out = append(out, p)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].order < out[j].order })
	return out
}

func names(ps []*peer) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.name)
	}
	return out
}

// measure starts the peer for the scenario, warms up, runs the load
// generator, and reads the server's CPU time.
func (r *runner) measure(sc scenario, p *peer, round int) (result, error) {
	srv, err := r.start(p, sc)
	if err != nil {
		return result{}, err
	}
	defer r.stop(srv)
	if err := waitPort(r.ctx, p.port(sc), 10*time.Second); err != nil {
		return result{}, fmt.Errorf("%s did not start: %w\n%s", p.name, err, srv.output())
	}
	if r.o.warmup > 0 {
		if _, err := sc.load(r, p.port(sc), r.o.warmup); err != nil {
			return result{}, fmt.Errorf("warm-up: %w\n%s", err, srv.output())
		}
	}
	cpu0, err := srv.cpu()
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	lr, err := sc.load(r, p.port(sc), r.o.duration)
	if err != nil {
		return result{}, fmt.Errorf("load: %w\n%s", err, srv.output())
	}
	wall := time.Since(start)
	cpu1, err := srv.cpu()
	if err != nil {
		return result{}, err
	}
	res := result{scenario: sc.name, peer: p.name, round: round, rate: lr.rate, ops: lr.ops,
		p50: lr.p50, p99: lr.p99, errors: lr.errors, unit: sc.unit}
	used := (cpu1 - cpu0).Seconds()
	res.cpuPct = 100 * used / wall.Seconds()
	if lr.ops > 0 {
		res.usPerOp = 1e6 * used / float64(lr.ops)
	}
	return res, nil
}

func (r *runner) checkSmoke() error {
	var bad []string
	seen := map[string]bool{}
	for _, res := range r.results {
		seen[res.scenario+"/"+res.peer] = true
		if res.ops == 0 || res.rate <= 0 {
			bad = append(bad, fmt.Sprintf("%s/%s: no operations parsed", res.scenario, res.peer))
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
