package main

import (
	"fmt"
	"html"
	"os"
	"path/filepath"
	"strings"
)

// writePlots draws one SVG bar chart per scenario: the median of each
// target with a min–max whisker. Plain SVG from Go: nothing to install.
func writePlots(dir string, results []result) (map[string]string, error) {
	out := map[string]string{}
	if err := os.MkdirAll(filepath.Join(dir, "plots"), 0o755); err != nil {
		return nil, err
	}
	for _, sc := range scenarios() {
		rows := rowsOf(results, sc.name)
		metric, title := rate, fmt.Sprintf("%s: %s/s (median, min–max)", sc.name, sc.unit)
		switch sc.kind {
		case "memory":
			title = sc.name + ": KiB of RSS per idle TLS connection (lower is better)"
		case "reload":
			title = sc.name + ": SIGHUP → config reloaded, ms (duration_ms; lower is better)"
		}
		type bar struct {
			label string
			s     stats
		}
		var bars []bar
		var top float64
		for _, w := range rows {
			if len(w.runs) == 0 {
				continue
			}
			s := w.stat(metric)
			if sc.kind == "reload" {
				var all []float64
				for _, r := range w.runs {
					all = append(all, r.samples...)
				}
				s = summarize(all)
			}
			bars = append(bars, bar{w.label, s})
			top = max(top, s.max)
		}
		if len(bars) == 0 || top <= 0 {
			continue
		}
		const left, width, barH, gap = 190, 520, 22, 10
		height := 50 + len(bars)*(barH+gap)
		var b strings.Builder
		fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+90, height)
		fmt.Fprintf(&b, `<text x="10" y="20" font-size="14">%s</text>`+"\n", html.EscapeString(title))
		for i, br := range bars {
			y := 35 + i*(barH+gap)
			w := float64(width) * br.s.med / top
			color := "#8da0cb"
			if strings.HasPrefix(br.label, "ztgate") {
				color = "#fc8d62"
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+15, html.EscapeString(br.label))
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, y, w, barH, color)
			x0, x1 := float64(left)+float64(width)*br.s.min/top, float64(left)+float64(width)*br.s.max/top
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="black"/>`+"\n", x0, x1, y+barH/2, y+barH/2)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s</text>`+"\n", x1+6, y+15, fmtNum(br.s.med))
		}
		b.WriteString("</svg>\n")
		rel := filepath.Join("plots", sc.name+".svg")
		if err := os.WriteFile(filepath.Join(dir, rel), []byte(b.String()), 0o644); err != nil {
			return nil, err
		}
		out[sc.name] = rel
	}
	return out, nil
}

func fmtNum(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}
