package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
)

// benchWriter is the cheapest http.ResponseWriter: the benchmark measures
// the gateway's own per-request work, not net/http's.
type benchWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) WriteHeader(code int)        { w.code = code }
func (w *benchWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }

// benchServer is a Server on a one-route config whose forwarder answers
// 1 KiB itself, so the handler's work (identify, route, stages, metrics,
// access log) is all that is measured.
func benchServer(b *testing.B, accessLog bool) http.Handler {
	body := []byte(strings.Repeat("x", 1024))
	ext := func(*configs.Config) (*Extension, error) {
		return &Extension{Forward: func(w http.ResponseWriter, req *Request) error {
			w.Header()["Content-Type"] = []string{"text/plain"}
			w.Header()["Content-Length"] = []string{"1024"}
			w.WriteHeader(http.StatusOK)
			w.Write(body)
			return nil
		}}, nil
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv, err := New(Deps{Logger: log, Metrics: NewMetrics(prometheus.NewRegistry()), Certs: newTestCerts(b), Extensions: ext})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	yaml := fmt.Sprintf(`
storage: %s
log: { access_log: %t }
listeners:
  - name: bench
    address: "127.0.0.1:0"
    tls: { names: [localhost] }
upstreams:
  - { name: up, endpoints: ["127.0.0.1:1"] }
routes:
  - { name: r, upstream: up }
`, b.TempDir(), accessLog)
	cfg, err := configs.Parse("bench.yaml", []byte(yaml), nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Apply(cfg); err != nil {
		b.Fatal(err)
	}
	return &listenerHandler{s: srv, name: "bench"}
}

// BenchmarkServeHTTP is the gateway's per-request overhead on the proxy
// path, without the upstream exchange and without net/http's server.
func BenchmarkServeHTTP(b *testing.B) {
	for _, accessLog := range []bool{false, true} {
		b.Run(fmt.Sprintf("access_log=%t", accessLog), func(b *testing.B) {
			h := benchServer(b, accessLog)
			r := httptest.NewRequest("GET", "https://localhost:8443/", nil)
			r.RemoteAddr = "127.0.0.1:40000"
			r.Header.Set("User-Agent", "bench")
			w := &benchWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, r)
				if w.code != http.StatusOK {
					b.Fatal(w.code)
				}
			}
		})
	}
}
