package certs

import (
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// metricValue returns the value of the series name{labels} in reg, and
// whether it exists.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, s := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range s.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if len(got) != len(labels) {
				continue
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			switch {
			case s.Gauge != nil:
				return s.GetGauge().GetValue(), true
			case s.Counter != nil:
				return s.GetCounter().GetValue(), true
			}
		}
	}
	return 0, false
}

func TestExpiryMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newManager(t, parseConfig(t, localCAConfig(t.TempDir(), "localhost", "127.0.0.1")), Deps{Metrics: reg})
	addr := serveTLS(t, m, "public")
	roots := poolFromFile(t, m.LocalCARoot())
	for _, n := range []string{"127.0.0.1", "localhost"} {
		t.Run(n, func(t *testing.T) {
			leaf, err := handshake(addr, n, roots)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := metricValue(t, reg, "ztgate_tls_certificate_expiry_seconds",
				map[string]string{"listener": "public", "name": n, "source": "local_ca"})
			if !ok || got != float64(leaf.NotAfter.Unix()) {
				t.Fatalf("expiry = %v (present %v), want %d", got, ok, leaf.NotAfter.Unix())
			}
		})
	}
}

func TestStatusHandler(t *testing.T) {
	m := newManager(t, parseConfig(t, localCAConfig(t.TempDir(), "localhost")), Deps{})
	rec := httptest.NewRecorder()
	m.StatusHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/certificates", nil))
	var rows []CertStatus
	if err := json.Unmarshal(rec.Body.Bytes(), &rows); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
	if len(rows) != 1 || !rows[0].Ready || rows[0].Listener != "public" || rows[0].Name != "localhost" ||
		rows[0].Source != "local_ca" || rows[0].Issuer != "CN=test local CA,O=ztgate" || rows[0].NotAfter.IsZero() {
		t.Fatalf("status = %+v", rows)
	}
}
