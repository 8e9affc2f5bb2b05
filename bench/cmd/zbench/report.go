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

// result is one measured run (or, with note set, a peer that cannot run
// the scenario or a ztgate feature this build lacks).
type result struct {
	scenario, peer, variant, unit string
	note                          string
	round                         int
	ops, errors                   int64
	rate                          float64
	p50, p99                      float64
	cpuPct, usPerOp               float64
	foreignPct                    float64   // CPU of processes zbench did not start, % of one core
	rssBefore, rssAfter           int64     // memory: KiB
	samples, seen                 []float64 // reload: duration_ms from the log, ms seen from outside
	reqs                          int64     // reload: requests served during the reloads
}

func (r result) label() string {
	if r.variant == "" {
		return r.peer
	}
	return r.peer + " " + r.variant
}

func (r result) summary() string {
	switch {
	case r.rssAfter > 0:
		return fmt.Sprintf("%d conns, RSS %.1f → %.1f MiB, %.1f KiB/conn, dropped or failed %d",
			r.ops, float64(r.rssBefore)/1024, float64(r.rssAfter)/1024, r.rate, r.errors)
	case len(r.samples) > 0:
		return fmt.Sprintf("%d reloads, duration_ms median %.0f max %.0f, seen %.0f ms, %d requests, %d failed",
			r.ops, median(r.samples), summarize(r.samples).max, r.rate, r.reqs, r.errors)
	}
	return fmt.Sprintf("%.0f %s/s, server CPU %.0f%%, %.1f µs/%s, p50 %.2f ms, p99 %.2f ms, errors %d, foreign CPU %.0f%%",
		r.rate, r.unit, r.cpuPct, r.usPerOp, r.unit, r.p50, r.p99, r.errors, r.foreignPct)
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

// row is one target's results in one scenario.
type row struct {
	label, peer, variant, note string
	runs                       []result
}

func (w row) stat(f func(result) float64) stats {
	var v []float64
	for _, r := range w.runs {
		v = append(v, f(r))
	}
	return summarize(v)
}

func (w row) errors() int64 {
	var n int64
	for _, r := range w.runs {
		n += r.errors
	}
	return n
}

func rowsOf(results []result, scenario string) []row {
	var out []row
	idx := map[string]int{}
	for _, r := range results {
		if r.scenario != scenario {
			continue
		}
		i, ok := idx[r.label()]
		if !ok {
			i = len(out)
			idx[r.label()] = i
			out = append(out, row{label: r.label(), peer: r.peer, variant: r.variant})
		}
		if r.note != "" {
			out[i].note = r.note
			continue
		}
		out[i].runs = append(out[i].runs, r)
	}
	for i := range out {
		if out[i].note != "" && len(out[i].runs) > 0 { // some rounds failed
			out[i].label += " (" + out[i].note + ")"
			out[i].note = ""
		}
	}
	return out
}

func refRow(rows []row, ref string) (row, bool) {
	for _, w := range rows {
		if w.peer == "ztgate" && w.variant == ref && len(w.runs) > 0 {
			return w, true
		}
	}
	return row{}, false
}

func rate(r result) float64    { return r.rate }
func usPerOp(r result) float64 { return r.usPerOp }

func writeReport(r *runner, took time.Duration) error {
	dir, results, versions, o := r.o.out, r.results, r.env.versions, r.o
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeCSV(filepath.Join(dir, "results.csv"), results, versions); err != nil {
		return err
	}
	plots, err := writePlots(dir, results)
	if err != nil {
		return err
	}

	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# ztgate vs peers: benchmark report\n\n")
	fmt.Fprintf(&b, "Produced by `%s` (%s) on %s (%s) in %s: %d round(s) of %s per target per scenario (warm-up %s), targets alternating within each round.\n\n",
		o.cmd, strings.Join(append([]string{"zbench"}, os.Args[1:]...), " "), time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, took.Round(time.Second), o.rounds, o.duration, o.warmup)
	b.WriteString("Method (as in shared/notes/peer-baselines.md): each server runs one worker/thread pinned to CPU 1 (`taskset -c 1`; Go servers with GOMAXPROCS=1); " +
		"every load generator, the nginx upstream (1 KiB static body, 127.0.0.1:18081), the egress TLS origin (nginx, 127.0.0.1:19443) and the DNS stub " +
		"(bench/cmd/dnsstub, 127.0.0.1:27310) run on CPU 0. `server µs/op` is the server's own CPU time (utime+stime from /proc) divided by the operations " +
		"completed: the most portable number on a shared 2-core machine, where the client core is often the limit. Session resumption is off everywhere " +
		"for the handshake scenarios. Ratios compare medians from this same run; differences under about 10 % are noise on this machine. " +
		"Plots are in `plots/`, raw numbers in `results.csv`, ztgate's CPU profiles in `profiles/` (taken during the last round's ztgate run, sampling costs about 1 %; not committed: open them with `go tool pprof bin/ztgate FILE` after a run).\n\n")
	b.WriteString("| peer | version |\n|---|---|\n")
	used := map[string]bool{}
	for _, res := range results {
		used[res.peer] = true
	}
	var peers []string
	for p := range versions {
		if used[p] {
			peers = append(peers, p)
		}
	}
	sort.Strings(peers)
	for _, p := range peers {
		fmt.Fprintf(&b, "| %s | %s |\n", p, versions[p])
	}

	b.WriteString("\n## Headline ratios\n\n")
	b.WriteString("ztgate's median over the peer's, from this run. Rate: above 1 means ztgate served more. CPU efficiency: the peer's server µs/op over ztgate's; above 1 means ztgate spent less CPU per operation (read this one when the server CPU column is well below 100 %: the client core was the limit).\n\n")
	for _, sc := range scenarios() {
		if line := headline(sc, rowsOf(results, sc.name)); line != "" {
			fmt.Fprintf(&b, "- **%s**: %s\n", sc.name, line)
		}
	}

	for _, sc := range scenarios() {
		rows := rowsOf(results, sc.name)
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n## %s\n\n%s\n\n", sc.name, sc.title)
		switch sc.kind {
		case "memory":
			memoryTable(&b, rows, versions)
		case "reload":
			reloadTable(&b, rows)
		default:
			if sc.baseline != "" {
				for _, w := range rowsOf(results, sc.baseline) {
					if w.peer == "ztgate" || w.peer == "haproxy" {
						w.label = w.peer + " no JWT (" + sc.baseline + ")"
						w.variant = "no JWT"
						rows = append([]row{w}, rows...)
					}
				}
			}
			rateTable(&b, sc, rows, versions)
			if sc.baseline != "" {
				jwtCost(&b, rows)
			}
		}
		if p, ok := plots[sc.name]; ok {
			fmt.Fprintf(&b, "\n![%s](%s)\n", sc.name, p)
		}
	}

	b.WriteString("\n## What limits ztgate (CPU profiles)\n\n")
	if len(r.profiles) == 0 {
		b.WriteString("No profile was taken in this run.\n")
	} else {
		b.WriteString("`go tool pprof -top` of ztgate under each scenario's load, summarised: the share of CPU samples by area " +
			"(by each function's own time; a syscall's share includes the kernel work under it), then the top functions.\n")
		var keys []string
		for k := range r.profiles {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			return scenarioIndex(keys[i]) < scenarioIndex(keys[j]) || scenarioIndex(keys[i]) == scenarioIndex(keys[j]) && keys[i] < keys[j]
		})
		for _, k := range keys {
			p := r.profiles[k]
			rel, _ := filepath.Rel(dir, p.file)
			fmt.Fprintf(&b, "\n### %s\n\n%.1f s of samples (`%s`). By area: ", k, p.total, rel)
			var parts []string
			for _, a := range p.areas {
				if a.pct >= 2 {
					parts = append(parts, fmt.Sprintf("%s %.0f %%", a.name, a.pct))
				}
			}
			b.WriteString(strings.Join(parts, "; ") + ".")
			if len(p.parts) > 0 {
				parts = parts[:0]
				for _, a := range p.parts {
					parts = append(parts, fmt.Sprintf("%s %.0f %%", a.name, a.pct))
				}
				b.WriteString(" Inclusive time of notable parts (cum): " + strings.Join(parts, "; ") + ".")
			}
			b.WriteString("\n\n```\n      flat  flat%   sum%        cum   cum%\n" + p.topText + "\n```\n")
		}
	}
	b.WriteString("\n## Reading the tables\n\n" +
		"`rate ratio` = ztgate's median rate / the peer's (above 1: ztgate served more). " +
		"`CPU-efficiency ratio` = the peer's server µs/op / ztgate's (above 1: ztgate spent less CPU per operation). " +
		"When the server CPU is well below 100 %, the client core limited the rate, and the µs/op column is the one to compare. " +
		"h2load and dnsperf report a mean latency, shown in the p50 column. `foreign CPU %` is the highest, over the rounds, of the CPU that processes zbench did not start " +
		"used during the run (all busy time in /proc/stat minus the server, the load generator and the helpers), in % of one core; a run above 15 % is measured again once (at most 4 such retries per zbench run, to stay within time), " +
		"and small negative values are tick-accounting noise. `cannot` rows are peers with no way to do the same work; " +
		"`not available in this build` rows are ztgate features the binary refused (`ztgate validate`) or did not act on (a check failed).\n")
	return os.WriteFile(filepath.Join(dir, "REPORT.md"), []byte(b.String()), 0o644)
}

func scenarioIndex(key string) int {
	name := strings.SplitN(key, "/", 2)[0]
	for i, sc := range scenarios() {
		if sc.name == name {
			return i
		}
	}
	return 99
}

func headline(sc scenario, rows []row) string {
	zt, ok := refRow(rows, sc.ref)
	if !ok {
		for _, w := range rows {
			if w.peer == "ztgate" && w.note != "" {
				return "ztgate " + w.note
			}
		}
		return ""
	}
	switch sc.kind {
	case "memory":
		z := zt.stat(rate).med
		var parts []string
		for _, w := range rows {
			if w.peer != "ztgate" && len(w.runs) > 0 {
				parts = append(parts, fmt.Sprintf("%.2f× %s's memory per connection (%.1f vs %.1f KiB)", z/w.stat(rate).med, w.peer, z, w.stat(rate).med))
			}
		}
		return fmt.Sprintf("ztgate %.1f KiB per idle TLS connection; %s", z, strings.Join(parts, ", "))
	case "reload":
		var all []float64
		for _, r := range zt.runs {
			all = append(all, r.samples...)
		}
		verdict := "**0 failed requests**"
		if n := zt.errors(); n > 0 {
			verdict = fmt.Sprintf("**%d failed requests (target 0)**", n)
		}
		return fmt.Sprintf("SIGHUP applied in %.0f ms median (max %.0f ms) with %d routes and policies; %s during %d reloads under load",
			summarize(all).med, summarize(all).max, reloadRoutesReport, verdict, len(all))
	}
	var parts []string
	for _, w := range rows {
		if w.peer == "ztgate" || len(w.runs) == 0 || w.peer == "direct" {
			continue
		}
		parts = append(parts, fmt.Sprintf("vs %s %.2f× rate, %.2f× CPU efficiency", w.label, zt.stat(rate).med/w.stat(rate).med, w.stat(usPerOp).med/zt.stat(usPerOp).med))
	}
	for _, w := range rows {
		if w.peer == "direct" && len(w.runs) > 0 {
			parts = append(parts, fmt.Sprintf("%.0f %% of direct", 100*zt.stat(rate).med/w.stat(rate).med))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("%s %.0f %s/s at %.1f µs/%s; %s", zt.label, zt.stat(rate).med, sc.unit, zt.stat(usPerOp).med, sc.unit, strings.Join(parts, "; "))
}

// reloadRoutesReport is the route count of a real (non-smoke) run.
const reloadRoutesReport = 10000

// sortRows puts ztgate first, then the peers that ran, then the rows
// that only carry a note.
func sortRows(rows []row) {
	rank := func(w row) int {
		switch {
		case w.note != "":
			return 2
		case w.peer == "ztgate":
			return 0
		}
		return 1
	}
	sort.SliceStable(rows, func(i, j int) bool { return rank(rows[i]) < rank(rows[j]) })
}

func rateTable(b *strings.Builder, sc scenario, rows []row, versions map[string]string) {
	fmt.Fprintf(b, "| target | median %s/s | min | max | server CPU %% | server µs/%s | p50 ms | p99 ms | errors | foreign CPU %% | rate ratio | CPU-efficiency ratio |\n", sc.unit, sc.unit)
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	sortRows(rows)
	for _, w := range rows {
		if w.note != "" {
			fmt.Fprintf(b, "| %s | %s | | | | | | | | | | |\n", w.label, w.note)
			continue
		}
		// Rows repeated from the baseline scenario compare with ztgate's
		// baseline row, the others with the reference variant.
		ref := sc.ref
		if w.variant == "no JWT" {
			ref = "no JWT"
		}
		zt, hasRef := refRow(rows, ref)
		rt, cpu, us := w.stat(rate), w.stat(func(r result) float64 { return r.cpuPct }), w.stat(usPerOp)
		p50, p99 := w.stat(func(r result) float64 { return r.p50 }), w.stat(func(r result) float64 { return r.p99 })
		ratio, eff := "–", "–"
		if w.peer != "ztgate" && hasRef && rt.med > 0 && zt.stat(usPerOp).med > 0 {
			ratio = fmt.Sprintf("%.2f×", zt.stat(rate).med/rt.med)
			eff = fmt.Sprintf("%.2f×", us.med/zt.stat(usPerOp).med)
		}
		p99s := fmt.Sprintf("%.2f", p99.med)
		if p99.med == 0 {
			p99s = "n/a"
		}
		label := w.label
		if w.peer == "ztgate" && w.variant == sc.ref && sc.ref != "" && sc.baseline != "" {
			label += " (ratios from this row)"
		}
		fmt.Fprintf(b, "| %s | %.0f | %.0f | %.0f | %.0f | %.1f | %.2f | %s | %d | %.0f | %s | %s |\n",
			label, rt.med, rt.min, rt.max, cpu.med, us.med, p50.med, p99s, w.errors(), w.stat(func(r result) float64 { return r.foreignPct }).max, ratio, eff)
	}
}

// jwtCost states what JWT verification adds per request, from the "no
// JWT" rows of the same run.
func jwtCost(b *strings.Builder, rows []row) {
	base := map[string]float64{}
	for _, w := range rows {
		if w.variant == "no JWT" && len(w.runs) > 0 {
			base[w.peer] = w.stat(usPerOp).med
		}
	}
	var parts []string
	for _, w := range rows {
		if w.variant == "no JWT" || len(w.runs) == 0 {
			continue
		}
		if b0, ok := base[w.peer]; ok {
			parts = append(parts, fmt.Sprintf("%s %+.1f µs/request", w.label, w.stat(usPerOp).med-b0))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(b, "\nServer CPU added over the same peer without JWT: %s.\n", strings.Join(parts, "; "))
	}
}

func memoryTable(b *strings.Builder, rows []row, versions map[string]string) {
	b.WriteString("| peer | connections | RSS before MiB | RSS with connections MiB | median KiB/conn | min | max | dropped or failed | ztgate ratio (peer KiB / ztgate KiB) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	zt, hasRef := refRow(rows, "")
	sortRows(rows)
	for _, w := range rows {
		if w.note != "" {
			fmt.Fprintf(b, "| %s | %s | | | | | | | |\n", w.label, w.note)
			continue
		}
		k := w.stat(rate)
		ratio := "–"
		if w.peer != "ztgate" && hasRef && zt.stat(rate).med > 0 {
			ratio = fmt.Sprintf("%.2f×", k.med/zt.stat(rate).med)
		}
		fmt.Fprintf(b, "| %s | %.0f | %.1f | %.1f | %.1f | %.1f | %.1f | %d | %s |\n", w.label,
			w.stat(func(r result) float64 { return float64(r.ops) }).med,
			w.stat(func(r result) float64 { return float64(r.rssBefore) }).med/1024,
			w.stat(func(r result) float64 { return float64(r.rssAfter) }).med/1024,
			k.med, k.min, k.max, w.errors(), ratio)
	}
	b.WriteString("\nUser-space RSS only (VmRSS); kernel socket memory is not included. RLIMIT_NOFILE is 20,000 here, so haproxy runs with `no strict-limits`.\n")
}

func reloadTable(b *strings.Builder, rows []row) {
	b.WriteString("| target | reloads | duration_ms (log) median | min | max | signal → log line ms median | max | requests during the reloads | failed requests | verdict |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, w := range rows {
		if w.note != "" {
			fmt.Fprintf(b, "| %s | %s | | | | | | | | |\n", w.label, w.note)
			continue
		}
		var d, s []float64
		var reqs int64
		for _, r := range w.runs {
			d, s, reqs = append(d, r.samples...), append(s, r.seen...), reqs+r.reqs
		}
		verdict := "pass (0 failed)"
		if w.errors() > 0 {
			verdict = "**FAIL** (target: 0 failed requests)"
		}
		fmt.Fprintf(b, "| %s | %d | %.0f | %.0f | %.0f | %.0f | %.0f | %d | %d | %s |\n", w.label, len(d),
			summarize(d).med, summarize(d).min, summarize(d).max, summarize(s).med, summarize(s).max, reqs, w.errors(), verdict)
	}
	b.WriteString("\nnginx, haproxy and caddy reloads were not measured (each needs its own master/worker or admin-API reload path).\n")
}

func writeCSV(path string, results []result, versions map[string]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := csv.NewWriter(f)
	w.Write([]string{"scenario", "peer", "variant", "version", "round", "ops", "rate_per_s", "server_cpu_pct", "server_us_per_op",
		"p50_ms", "p99_ms", "errors", "foreign_cpu_pct", "rss_before_kib", "rss_after_kib", "reload_ms", "note"})
	for _, r := range results {
		var ms []string
		for _, v := range r.samples {
			ms = append(ms, strconv.FormatFloat(v, 'f', -1, 64))
		}
		w.Write([]string{r.scenario, r.peer, r.variant, versions[r.peer], strconv.Itoa(r.round), strconv.FormatInt(r.ops, 10),
			fmt.Sprintf("%.1f", r.rate), fmt.Sprintf("%.1f", r.cpuPct), fmt.Sprintf("%.2f", r.usPerOp),
			fmt.Sprintf("%.3f", r.p50), fmt.Sprintf("%.3f", r.p99), strconv.FormatInt(r.errors, 10), fmt.Sprintf("%.1f", r.foreignPct),
			strconv.FormatInt(r.rssBefore, 10), strconv.FormatInt(r.rssAfter, 10), strings.Join(ms, ";"), r.note})
	}
	w.Flush()
	return w.Error()
}
