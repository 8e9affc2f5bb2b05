package main

import (
	"os"
	"path/filepath"
	"testing"
)

// The parsers read the real output of each load generator (captured from
// wrk 4.1.0, h2load 1.52.0, dnsperf 2.10.0 on this machine) and of the
// bench's own clients.
func TestParsers(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		name  string
		parse func() (loadResult, error)
		want  loadResult
	}{
		{"wrk", func() (loadResult, error) { return parseWrk(read("wrk.txt")) },
			loadResult{ops: 13676, rate: 12601.60, p50: 0.181, p99: 160.35}},
		{"h2load", func() (loadResult, error) { return parseH2load(read("h2load.txt")) },
			loadResult{ops: 11027, rate: 11027, p50: 0.180}},
		{"dnsperf: NXDOMAIN answers count as errors", func() (loadResult, error) { return parseDnsperf(read("dnsperf.txt")) },
			loadResult{ops: 508, rate: 507.910608, p50: 0.299, errors: 254}},
		{"hsload", func() (loadResult, error) {
			return parseKV("handshakes=1200 failures=3 rate=120.0 p50_ms=1.50 p99_ms=9.25\n", "handshakes")
		}, loadResult{ops: 1200, errors: 3, rate: 120, p50: 1.5, p99: 9.25}},
		{"h3load", func() (loadResult, error) {
			return parseKV("requests=5000 failures=0 rate=2500.5 p50_ms=0.80 p99_ms=4.00\n", "requests")
		}, loadResult{ops: 5000, rate: 2500.5, p50: 0.8, p99: 4}},
		{"curl -w: 5 s at 512 MiB/s", func() (loadResult, error) { return parseCurl("536870912.000 2684354560 200\n") },
			loadResult{ops: 2560, rate: 512}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse()
			if err != nil {
				t.Fatal(err)
			}
			near := func(a, b float64) bool { return a-b < 1e-6 && b-a < 1e-6 }
			if got.ops != tt.want.ops || got.errors != tt.want.errors || !near(got.rate, tt.want.rate) ||
				!near(got.p50, tt.want.p50) || !near(got.p99, tt.want.p99) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParsersRefuse(t *testing.T) {
	for name, f := range map[string]func() error{
		"wrk":     func() error { _, err := parseWrk("connection refused"); return err },
		"h2load":  func() error { _, err := parseH2load("no protocol negotiated"); return err },
		"dnsperf": func() error { _, err := parseDnsperf("[Fatal] unable to open"); return err },
		"hsload as h3": func() error {
			_, err := parseKV("handshakes=1 failures=0 rate=1.0 p50_ms=1.00 p99_ms=1.00", "requests")
			return err
		},
		"curl 403":      func() error { _, err := parseCurl("0.000 0 403\n"); return err },
		"curl no -w":    func() error { _, err := parseCurl("curl: (7) Failed to connect"); return err },
		"reload no log": func() error { return matchErr(reloadDur.FindStringSubmatch(`{"msg":"config reload refused"}`)) },
	} {
		if f() == nil {
			t.Errorf("%s: parsed garbage without an error", name)
		}
	}
}

func matchErr(m []string) error {
	if m == nil {
		return os.ErrNotExist
	}
	return nil
}

func TestReloadLine(t *testing.T) {
	line := `{"time":"2026-11-23T21:00:00Z","level":"INFO","msg":"config reloaded","config":"z.yaml","duration_ms":412,"listeners":1,"routes":10001}`
	m := reloadDur.FindStringSubmatch(line)
	if m == nil || m[1] != "412" {
		t.Fatalf("duration_ms not read from %s: %v", line, m)
	}
}

func TestSummarize(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want stats
	}{
		{[]float64{3, 1, 2}, stats{2, 1, 3}},
		{[]float64{4, 1, 2, 3}, stats{2.5, 1, 4}},
		{nil, stats{}},
	} {
		if got := summarize(tt.in); got != tt.want {
			t.Errorf("summarize(%v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

// A CPU profile of ztgate under the jwt-h1 "chain" load (1 s, captured
// by zbench) is summarised by area, notable parts and top functions.
func TestSummarizeProfile(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go tool pprof")
	}
	s, err := summarizeProfile("", filepath.Join("testdata", "chain.pprof"))
	if err != nil {
		t.Fatal(err)
	}
	if s.total <= 0 || len(s.top) == 0 || len(s.areas) == 0 {
		t.Fatalf("empty summary: %+v", s)
	}
	var sum float64
	for _, a := range s.areas {
		sum += a.pct
	}
	if sum < 99.9 || sum > 100.1 {
		t.Errorf("areas add up to %.1f %%, want 100", sum)
	}
	// Inclusive times come from functions with no own time too.
	parts := map[string]float64{}
	for _, p := range s.parts {
		parts[p.name] = p.pct
	}
	if parts["Rego (OPA)"] == 0 || parts["gateway pipeline"] < parts["Rego (OPA)"] {
		t.Errorf("the chain profile's parts are wrong: %+v", s.parts)
	}
}
