package dnsguard

import (
	"math/rand/v2"
	"net/netip"
	goruntime "runtime"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestRandomSubdomainFlood pushes 1,000,000 queries for random names
// (random subdomains of random and of a few victim domains, from 5,000
// clients) through the full answer path and checks that every per-client
// and per-name table stays within its configured cap and that the
// accounted memory stays under the budget. It asserts on the internal
// size counters, never on timing.
func TestRandomSubdomainFlood(t *testing.T) {
	t.Parallel()
	queries := 1_000_000
	if raceEnabled {
		queries = 200_000
	}
	const (
		cacheMax   = 20_000
		trackMax   = 10_000
		resolveMax = 10_000
		clientsMax = 1_000
		budget     = 32 << 20 // bytes, all tables together
	)
	clk := newClock()
	s, up := newOfflineServer(t, `  cache: {max_entries: 20000}
  tunneling: {max_tracked: 10000}
  resolved: {max_entries: 10000}
  rate_limit: {qps: 50, burst: 100, max_clients: 1000}
`, clk)
	victims := []string{"victim.example", "bank.example", "shop.example"}
	var (
		mu      sync.Mutex
		peak    Sizes
		maxHeap uint64
	)
	sample := func() {
		z := s.Sizes()
		var ms goruntime.MemStats
		goruntime.ReadMemStats(&ms)
		mu.Lock()
		defer mu.Unlock()
		peak.CacheEntries = max(peak.CacheEntries, z.CacheEntries)
		peak.CacheBytes = max(peak.CacheBytes, z.CacheBytes)
		peak.TrackedPairs = max(peak.TrackedPairs, z.TrackedPairs)
		peak.QuarantinedPairs = max(peak.QuarantinedPairs, z.QuarantinedPairs)
		peak.TrackerBytes = max(peak.TrackerBytes, z.TrackerBytes)
		peak.ResolvedEntries = max(peak.ResolvedEntries, z.ResolvedEntries)
		peak.ResolvedBytes = max(peak.ResolvedBytes, z.ResolvedBytes)
		peak.RateLimitClients = max(peak.RateLimitClients, z.RateLimitClients)
		maxHeap = max(maxHeap, ms.HeapInuse)
	}
	// Two workers (the machine has two cores), each with its own names.
	const workers = 2
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(1, uint64(w)))
			const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
			buf := make([]byte, 0, 64)
			randLabel := func(n int) {
				for i := 0; i < n; i++ {
					buf = append(buf, letters[rng.IntN(len(letters))])
				}
			}
			for i := w; i < queries; i += workers {
				buf = buf[:0]
				randLabel(8 + rng.IntN(20))
				buf = append(buf, '.')
				if i%2 == 0 {
					buf = append(buf, victims[i%3]...)
				} else {
					randLabel(10)
					buf = append(buf, ".com"...)
				}
				buf = append(buf, '.')
				client := netip.AddrFrom4([4]byte{10, 20, byte(i % 5000 >> 8), byte(i % 5000)})
				qt := dns.TypeA
				if i%4 == 1 {
					qt = dns.TypeAAAA
				}
				ask(s, client, string(buf), qt)
				clk.Add(100 * time.Microsecond)
				if i%100_000 < workers {
					sample()
				}
			}
		}()
	}
	wg.Wait()
	sample()
	total := peak.CacheBytes + peak.TrackerBytes + peak.ResolvedBytes
	t.Logf("flood of %d random names: %d reached the upstream; peak cache %d entries / %d KiB, tracker %d pairs + %d quarantined / %d KiB, resolved %d entries / %d KiB, rate-limit %d clients; accounted %d KiB (budget %d KiB); Go heap in use (informational) %d MiB",
		queries, up.queries.Load(), peak.CacheEntries, peak.CacheBytes>>10, peak.TrackedPairs, peak.QuarantinedPairs, peak.TrackerBytes>>10,
		peak.ResolvedEntries, peak.ResolvedBytes>>10, peak.RateLimitClients, total>>10, budget>>10, maxHeap>>20)
	for _, c := range []struct {
		what     string
		got, cap int
	}{
		{"cache entries", peak.CacheEntries, cacheMax},
		{"tracked pairs", peak.TrackedPairs, trackMax},
		{"quarantined pairs", peak.QuarantinedPairs, max(trackMax/4, 1024)},
		{"resolved entries", peak.ResolvedEntries, resolveMax},
		{"rate-limit clients", peak.RateLimitClients, clientsMax},
	} {
		if c.got > c.cap {
			t.Errorf("%s = %d, above the cap %d", c.what, c.got, c.cap)
		}
		if c.got == 0 && c.what != "quarantined pairs" {
			t.Errorf("%s = 0: the flood did not reach this table", c.what)
		}
	}
	if total > budget {
		t.Errorf("accounted memory %d bytes, above the budget %d", total, budget)
	}
}
