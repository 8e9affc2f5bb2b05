package upstream

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/ztgate/ztgate/configs"
)

// parseUpstream loads one upstream through the real config loader, so
// defaults and validation are the product's. body is the YAML of the
// upstream's keys after name, indented by four spaces.
func parseUpstream(t testing.TB, name string, endpoints []string, body string) configs.Upstream {
	t.Helper()
	doc := fmt.Sprintf("upstreams:\n  - name: %s\n    endpoints: [%s]\n%s", name, strings.Join(endpoints, ", "), body)
	cfg, err := configs.Parse("test.yaml", []byte(doc), nil)
	if err != nil {
		t.Fatalf("config:\n%s\n%v", doc, err)
	}
	return cfg.Upstreams[0]
}

func newPool(t testing.TB, u configs.Upstream, deps Deps) *Pool {
	t.Helper()
	p, err := New(u, deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// named is an upstream server that answers its name.
func named(t testing.TB, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	}))
	t.Cleanup(s.Close)
	return s
}

func addr(s *httptest.Server) string { return s.Listener.Addr().String() }

// deadAddr returns a loopback address nobody listens on (connection
// refused).
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// front is the gateway side of a test: a loopback server whose handler
// proxies through p with the RequestInfo from info, and answers errors
// with WriteError. Errors are sent to errs when it is not nil.
func front(t testing.TB, p *Pool, info func(r *http.Request) *RequestInfo, errs chan<- error) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ri := &RequestInfo{RequestID: "req-1", Proto: "https", Route: "test"}
		if info != nil {
			ri = info(r)
		}
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil && !ri.ClientIP.IsValid() {
			ri.ClientIP = ap.Addr()
		}
		err := p.Proxy(w, r, ri)
		if err != nil {
			if errs != nil {
				errs <- err
			}
			WriteError(w, err, ri.RequestID)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func get(t testing.TB, c *http.Client, method, url string, body io.Reader) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// waitFor waits on ch (a signal per event) until cond holds, failing
// after 200 events or 10 s without one: a guard against hanging, never
// a measured duration.
func waitFor(t testing.TB, ch <-chan struct{}, cond func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10s")
		}
	}
	t.Fatal("condition never held")
}

// signal returns a non-blocking notifier and its channel.
func signal() (func(), chan struct{}) {
	ch := make(chan struct{}, 1)
	return func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}, ch
}

// metricValue reads a counter or gauge.
func metricValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return -1
}
