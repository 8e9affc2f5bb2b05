package dnsguard

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// TestAlertAndBlockRecords checks the alert and block log records carry
// the documented field names (docs/dns.md "Logs") as JSON.
func TestAlertAndBlockRecords(t *testing.T) {
	var buf lockedBuffer
	clk := newClock()
	cfg := parseCfg(t, "dns:\n  listen: [\"127.0.0.1:0\"]\n  upstreams: [{address: \"127.0.0.1:53\"}]\n  groups: [{name: all, deny: [blocked.example]}]\n")
	s, err := New(cfg, Deps{Now: clk.Now, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	up := &synthUpstream{}
	s.exchangeHook = up.exchange
	client := mustAddr("10.3.0.1")
	ask(s, client, "blocked.example.", 1)
	for _, q := range loadCorpus(t, "testdata/dns/tunnel-dns2tcp.txt")[:5] {
		ask(s, client, q.name, q.qtype)
		clk.Add(10 * time.Millisecond)
	}
	records := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(buf.b.String()), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if _, seen := records[r["msg"].(string)]; !seen {
			records[r["msg"].(string)] = r
		}
	}
	want := map[string][]string{
		"dns query blocked":   {LogClient, LogQName, LogQType, LogDecision, LogReason, LogGroup, LogRcode},
		"dns tunnel detected": {LogClient, LogDomain, LogMode, LogScore, LogFeatures, LogRules, LogQueries, LogSuspicious, LogNameBytes, LogDistinct, LogQuarantine, LogQName},
	}
	for msg, fields := range want {
		r, ok := records[msg]
		if !ok {
			t.Errorf("no %q record in:\n%s", msg, buf.b.String())
			continue
		}
		for _, f := range fields {
			if _, ok := r[f]; !ok {
				t.Errorf("%q record lacks field %q: %v", msg, f, r)
			}
		}
	}
	if r := records["dns tunnel detected"]; r != nil && (r[LogDomain] != "t2.test" || r[LogClient] != "10.3.0.1" || r["component"] != "dnsguard") {
		t.Errorf("alert record: %v", r)
	}
}
