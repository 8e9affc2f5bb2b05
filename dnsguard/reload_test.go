package dnsguard

import (
	"context"
	goruntime "runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestReloadUnderTraffic applies 20 configs (alternating deny lists, one
// broken) while 4 clients query over UDP and TCP. Every query must get
// an answer (NOERROR or the block rcode, never a timeout or SERVFAIL),
// and after Shutdown no serving goroutine is left.
func TestReloadUnderTraffic(t *testing.T) {
	before := goruntime.NumGoroutine()
	up := startUpstream(t)
	s := startServer(t, up.addr, "  rate_limit: {qps: -1}\n", nil)
	addr := s.Addrs()[0]
	base := "dns:\n  listen: [\"127.0.0.1:0\"]\n  upstreams: [{address: \"" + up.addr + "\"}]\n  rate_limit: {qps: -1}\n"
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var answered, bad atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			network := []string{"udp", "tcp"}[w%2]
			c := &dns.Client{Net: network, Timeout: 5 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				m := new(dns.Msg)
				m.SetQuestion("www.example.test.", dns.TypeA)
				r, _, err := c.Exchange(m, addr)
				if err != nil || (r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError) {
					bad.Add(1)
					continue
				}
				answered.Add(1)
			}
		}()
	}
	for i := 0; i < 20; i++ {
		body := base
		if i%2 == 0 {
			body += "  groups: [{name: all, deny: [www.example.test]}]\n"
		}
		if i == 7 { // compiles in configs, fails in dnsguard: the old one stays
			cfg := parseCfg(t, body)
			cfg.DNS.Upstreams[0].Protocol = "tls"
			if err := s.Apply(cfg); err == nil {
				t.Fatal("a tls upstream without a dialer was applied")
			}
			continue
		}
		if err := s.Apply(parseCfg(t, body)); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
		// Let some queries run on this snapshot before the next swap.
		for n, limit := answered.Load(), time.Now().Add(10*time.Second); answered.Load() < n+20 && time.Now().Before(limit); {
			goruntime.Gosched()
		}
	}
	close(stop)
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d of %d queries failed during reloads", bad.Load(), answered.Load()+bad.Load())
	}
	s.Shutdown(context.Background())
	up.stop()
	// Shutdown is synchronous; give exited goroutines a moment to be reaped.
	deadline := time.Now().Add(5 * time.Second)
	for goruntime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		goruntime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
	if n := goruntime.NumGoroutine(); n > before+2 {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines before, %d after Shutdown:\n%s", before, n, buf[:goruntime.Stack(buf, true)])
	}
}
