package gateway

import (
	"fmt"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// TestRequestMetrics checks the request counters and latency histogram
// by listener, route and code, including the "-" route of requests that
// matched none, across a reload (the series are bound per snapshot and
// must keep counting into the same process-wide metrics).
func TestRequestMetrics(t *testing.T) {
	h := newHarness(t, nil)
	conf := fmt.Sprintf(`
storage: %s
listeners:
  - { name: public, address: "127.0.0.1:0", tls: { names: [localhost] } }
  - { name: other, address: "127.0.0.2:0", tls: { names: [localhost] } }
routes:
  - { name: ok, match: { path: /ok }, direct_response: { status: 200, body: "ok" } }
  - { name: gone, match: { path: /gone }, direct_response: { status: 410 } }
  - { name: other-only, listeners: [other], match: { path: /other }, direct_response: { status: 202 } }
`, t.TempDir())
	h.apply(conf)
	c := h.client("h1")
	send := func(listener, path string, n int) {
		for i := 0; i < n; i++ {
			h.do(c, listener, "GET", "localhost", path)
		}
	}
	send("public", "/ok", 3)
	send("public", "/gone", 2)
	send("public", "/nope", 1)
	send("public", "/other", 1) // not served on public: no route
	send("other", "/other", 2)
	h.apply(conf) // a reload binds new series holders for the same series
	send("public", "/ok", 1)

	counts, hist := requestMetrics(t, h)
	want := map[string]float64{
		"public/ok/200":        4,
		"public/gone/410":      2,
		"public/-/404":         2,
		"other/other-only/202": 2,
	}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("ztgate_http_requests_total %s = %v, want %v (all: %v)", k, counts[k], v, counts)
		}
	}
	if len(counts) != len(want) {
		t.Errorf("series %v, want exactly %v", counts, want)
	}
	for k, v := range map[string]uint64{"public/ok": 4, "public/gone": 2, "public/-": 2, "other/other-only": 2} {
		if hist[k] != v {
			t.Errorf("ztgate_http_request_duration_seconds_count %s = %d, want %d (all: %v)", k, hist[k], v, hist)
		}
	}
}

// requestMetrics returns the request counters by "listener/route/code"
// and the latency sample counts by "listener/route".
func requestMetrics(t *testing.T, h *harness) (map[string]float64, map[string]uint64) {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	counts, hist := map[string]float64{}, map[string]uint64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := label(m, LabelListener) + "/" + label(m, LabelRoute)
			switch mf.GetName() {
			case "ztgate_http_requests_total":
				counts[key+"/"+label(m, LabelCode)] = m.GetCounter().GetValue()
			case "ztgate_http_request_duration_seconds":
				hist[key] = m.GetHistogram().GetSampleCount()
			}
		}
	}
	return counts, hist
}
