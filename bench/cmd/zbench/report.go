package main

import (
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// result is one measured run.
type result struct {
	scenario, peer, unit string
	round                int
	ops, errors          int64
	rate                 float64
	p50, p99             float64
	cpuPct, usPerOp      float64
}

func (r result) summary() string {
	return fmt.Sprintf("%.0f %ss/s, server CPU %.0f%%, %.1f µs/%s, p50 %.2f ms, p99 %.2f ms, errors %d",
		r.rate, r.unit, r.cpuPct, r.usPerOp, r.unit, r.p50, r.p99, r.errors)
}

type stats struct{ med, min, max float64 }

func summarize(vals []float64) stats {
	if len(vals) == 0 {
		return stats{}
	}
	s := append([]float64(nil), vals...)
	sort.Float64s(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stats{med, s[0], s[len(s)-1]}
}

func writeReport(dir string, results []result, versions map[string]string, o options) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "results.csv"))
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"scenario", "peer", "version", "round", "ops", "rate_per_s", "server_cpu_pct", "server_us_per_op", "p50_ms", "p99_ms", "errors"})
	for _, r := range results {
		w.Write([]string{r.scenario, r.peer, versions[r.peer], strconv.Itoa(r.round), strconv.FormatInt(r.ops, 10),
			fmt.Sprintf("%.1f", r.rate), fmt.Sprintf("%.1f", r.cpuPct), fmt.Sprintf("%.2f", r.usPerOp),
			fmt.Sprintf("%.3f", r.p50), fmt.Sprintf("%.3f", r.p99), strconv.FormatInt(r.errors, 10)})
	}
	w.Flush()
	f.Close()

	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# ztgate vs peers: benchmark report\n\n")
	fmt.Fprintf(&b, "Produced by `%s` on %s (%s), %d round(s) of %s per peer per scenario, peers alternating within each round.\n\n",
		strings.Join(os.Args, " "), time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, o.rounds, o.duration)
	b.WriteString("Method: each server runs one worker/thread pinned to CPU 1 (`taskset -c 1`; Go servers with GOMAXPROCS=1); " +
		"the load generator and the nginx upstream (1 KiB static body) run on CPU 0. `server µs/op` is the server's own CPU time " +
		"(utime+stime from /proc) divided by the operations completed: the most portable number on a shared 2-core machine, " +
		"where the client core is often the limit. Ratios compare medians from this same run.\n\n")
	b.WriteString("| peer | version |\n|---|---|\n")
	peers := make([]string, 0, len(versions))
	for p := range versions {
		peers = append(peers, p)
	}
	sort.Strings(peers)
	for _, p := range peers {
		fmt.Fprintf(&b, "| %s | %s |\n", p, versions[p])
	}
	for _, sc := range scenarios() {
		var rows []result
		for _, r := range results {
			if r.scenario == sc.name {
				rows = append(rows, r)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n## %s\n\n%s\n\n", sc.name, sc.title)
		b.WriteString("| peer | median /s | min | max | server CPU % | server µs/op | p50 ms | p99 ms | errors | ztgate rate ratio | ztgate CPU-efficiency ratio |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
		by := map[string][]result{}
		var order []string
		for _, r := range rows {
			if _, ok := by[r.peer]; !ok {
				order = append(order, r.peer)
			}
			by[r.peer] = append(by[r.peer], r)
		}
		med := func(rs []result, f func(result) float64) stats {
			var v []float64
			for _, r := range rs {
				v = append(v, f(r))
			}
			return summarize(v)
		}
		zt := by["ztgate"]
		ztRate := med(zt, func(r result) float64 { return r.rate }).med
		ztUS := med(zt, func(r result) float64 { return r.usPerOp }).med
		for _, p := range order {
			rs := by[p]
			rate := med(rs, func(r result) float64 { return r.rate })
			cpu := med(rs, func(r result) float64 { return r.cpuPct })
			us := med(rs, func(r result) float64 { return r.usPerOp })
			p50 := med(rs, func(r result) float64 { return r.p50 })
			p99 := med(rs, func(r result) float64 { return r.p99 })
			var errs int64
			for _, r := range rs {
				errs += r.errors
			}
			ratio, eff := "–", "–"
			if p != "ztgate" && len(zt) > 0 && rate.med > 0 && ztUS > 0 {
				ratio = fmt.Sprintf("%.2f×", ztRate/rate.med)
				eff = fmt.Sprintf("%.2f×", us.med/ztUS)
			}
			p99s := fmt.Sprintf("%.2f", p99.med)
			if sc.name == "proxy-h2" {
				p99s = "n/a (h2load: mean in p50)"
			}
			fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.0f | %.0f | %.1f | %.2f | %s | %d | %s | %s |\n",
				p, rate.med, rate.min, rate.max, cpu.med, us.med, p50.med, p99s, errs, ratio, eff)
		}
	}
	b.WriteString("\n`ztgate rate ratio` = ztgate's median rate / the peer's (above 1: ztgate served more). " +
		"`ztgate CPU-efficiency ratio` = the peer's server µs/op / ztgate's (above 1: ztgate spent less CPU per operation). " +
		"When the server CPU is well below 100 %, the client core limited the rate, and the µs/op column is the one to compare.\n")
	return os.WriteFile(filepath.Join(dir, "REPORT.md"), []byte(b.String()), 0o644)
}
