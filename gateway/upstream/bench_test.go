package upstream

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// discardWriter is the cheapest http.ResponseWriter: the benchmark
// measures the proxy and the upstream exchange, not a front server.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
func (d *discardWriter) Write(b []byte) (int, error) { d.n += len(b); return len(b), nil }

func oneKiBUpstream(b *testing.B) *httptest.Server {
	s, _ := countingUpstream(b)
	return s
}

// countingUpstream also counts the connections the upstream accepted.
func countingUpstream(b *testing.B) (*httptest.Server, *atomic.Int64) {
	body := []byte(strings.Repeat("x", 1024))
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
	var conns atomic.Int64
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	b.Cleanup(s.Close)
	return s, &conns
}

// BenchmarkProxy1KiB proxies a 1 KiB response over a keep-alive pool
// (loopback upstream in the same process).
func BenchmarkProxy1KiB(b *testing.B) {
	up := oneKiBUpstream(b)
	p := newPool(b, parseUpstream(b, "bench", []string{addr(up)}, ""), Deps{})
	r := httptest.NewRequest("GET", "https://bench.test/", nil)
	r.Header.Set("User-Agent", "bench")
	info := &RequestInfo{RequestID: "0123456789abcdef", Proto: "https", Route: "bench"}
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		if err := p.Proxy(w, r, info); err != nil || w.code != 200 {
			b.Fatal(err, w.code)
		}
	}
}

// BenchmarkProxy1KiBParallel runs GOMAXPROCS×32 concurrent requests (64
// on two cores, the concurrency of the peer baselines) and reports how
// many upstream connections the pool opened: with max_idle_conns at its
// default (256) that stays at the concurrency, with no churn.
func BenchmarkProxy1KiBParallel(b *testing.B) {
	up, conns := countingUpstream(b)
	p := newPool(b, parseUpstream(b, "bench", []string{addr(up)}, ""), Deps{})
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest("GET", "https://bench.test/", nil)
		info := &RequestInfo{RequestID: "0123456789abcdef", Proto: "https", Route: "bench"}
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			if err := p.Proxy(w, r, info); err != nil || w.code != 200 {
				b.Error(err, w.code)
				return
			}
		}
	})
	b.ReportMetric(float64(conns.Load()), "upstream-conns")
}

// BenchmarkStdlibReverseProxy1KiB is the reference: net/http/httputil's
// ReverseProxy with the same keep-alive pool size, same upstream.
func BenchmarkStdlibReverseProxy1KiB(b *testing.B) {
	up := oneKiBUpstream(b)
	target, _ := url.Parse(up.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	r := httptest.NewRequest("GET", "https://bench.test/", nil)
	r.Header.Set("User-Agent", "bench")
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		rp.ServeHTTP(w, r)
		if w.code != 200 {
			b.Fatal(w.code)
		}
	}
}
