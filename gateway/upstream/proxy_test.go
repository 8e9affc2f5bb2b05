package upstream

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ztgate/ztgate/configs"
)

func TestRoundRobinDistribution(t *testing.T) {
	a, b, c := named(t, "a"), named(t, "b"), named(t, "c")
	p := newPool(t, parseUpstream(t, "rr", []string{addr(a), addr(b), addr(c)}, ""), Deps{})
	f := front(t, p, nil, nil)
	counts := map[string]int{}
	for i := 0; i < 30; i++ {
		code, body := get(t, f.Client(), "GET", f.URL, nil)
		if code != 200 {
			t.Fatalf("status %d", code)
		}
		counts[body]++
	}
	for _, n := range []string{"a", "b", "c"} {
		if counts[n] != 10 {
			t.Fatalf("round robin over 3 endpoints, 30 requests: got %v, want 10 each", counts)
		}
	}
	// With a unavailable, b and c share evenly (not 2:1 by position).
	p.eps[0].unhealthy.Store(true)
	clear(counts)
	for i := 0; i < 30; i++ {
		_, body := get(t, f.Client(), "GET", f.URL, nil)
		counts[body]++
	}
	if counts["a"] != 0 || counts["b"] != 15 || counts["c"] != 15 {
		t.Fatalf("round robin with one endpoint unhealthy: %v, want b and c 15 each", counts)
	}
}

func TestLeastRequests(t *testing.T) {
	type arrival struct {
		who     string
		release chan struct{}
	}
	arrivals := make(chan arrival)
	blocking := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rel := make(chan struct{})
			arrivals <- arrival{name, rel}
			<-rel
			io.WriteString(w, name)
		}))
		t.Cleanup(s.Close)
		return s
	}
	x, y := blocking("x"), blocking("y")
	p := newPool(t, parseUpstream(t, "lr", []string{addr(x), addr(y)}, "    load_balancing: least_requests\n"), Deps{})
	f := front(t, p, nil, nil)
	done := make(chan string, 8)
	send := func() {
		go func() {
			res, err := f.Client().Get(f.URL)
			if err != nil {
				done <- "error: " + err.Error()
				return
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			done <- string(b)
		}()
	}
	send()
	first := <-arrivals
	send()
	second := <-arrivals
	if first.who == second.who {
		t.Fatalf("with one request outstanding on %s, the next went there too", first.who)
	}
	// Finish the first endpoint's request: it then has fewer outstanding.
	close(first.release)
	if got := <-done; got != first.who {
		t.Fatalf("got %q", got)
	}
	for i := 0; i < 3; i++ {
		send()
		a := <-arrivals
		if a.who != first.who {
			t.Fatalf("request %d went to %s (1 outstanding), not %s (0 outstanding)", i, a.who, first.who)
		}
		close(a.release)
		<-done
	}
	close(second.release)
	<-done
}

func TestRetries(t *testing.T) {
	live := named(t, "live")
	dead := deadAddr(t)
	m, _ := NewMetrics(nil)
	// No ejection in this test: failures must reach the retry logic.
	u := parseUpstream(t, "retry", []string{dead, addr(live)}, "    outlier_detection: {consecutive_failures: 1000}\n")
	p := newPool(t, u, Deps{Metrics: m})
	errs := make(chan error, 10)
	f := front(t, p, nil, errs)

	t.Run("GET is retried on another endpoint", func(t *testing.T) {
		for i := 0; i < 6; i++ {
			if code, body := get(t, f.Client(), "GET", f.URL, nil); code != 200 || body != "live" {
				t.Fatalf("GET %d: %d %q", i, code, body)
			}
		}
		if n := metricValue(m.retries.WithLabelValues("retry", "connect_failure")); n != 3 {
			t.Fatalf("retries = %v, want 3 (every other request hits the dead endpoint first)", n)
		}
	})
	t.Run("POST is not retried", func(t *testing.T) {
		failed := 0
		for i := 0; i < 4; i++ {
			code, body := get(t, f.Client(), "POST", f.URL, strings.NewReader("payload"))
			switch code {
			case 200:
			case 502:
				failed++
				if !strings.Contains(body, "req-1") || strings.Contains(body, "refused") {
					t.Fatalf("error body %q: want the request id and no cause", body)
				}
				var e *Error
				if err := <-errs; !errors.As(err, &e) || e.Kind != KindConnect || e.Endpoint != dead {
					t.Fatalf("error %v: want connect_failure on %s", err, dead)
				}
			default:
				t.Fatalf("POST: status %d", code)
			}
		}
		if failed != 2 {
			t.Fatalf("%d of 4 POSTs failed, want 2 (round robin over one dead endpoint)", failed)
		}
	})
	t.Run("PUT with a body is retried after a connect failure", func(t *testing.T) {
		for i := 0; i < 4; i++ {
			if code, body := get(t, f.Client(), "PUT", f.URL, strings.NewReader("payload")); code != 200 || body != "live" {
				t.Fatalf("PUT %d: %d %q", i, code, body)
			}
		}
	})
	t.Run("retries on 503 for GET only when another endpoint is left", func(t *testing.T) {
		busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(503)
			io.WriteString(w, "busy")
		}))
		defer busy.Close()
		u := parseUpstream(t, "retry503", []string{addr(busy), addr(live)}, "    retries: {attempts: 2, on: [connect_failure, \"503\"]}\n    outlier_detection: {consecutive_failures: 1000}\n")
		p := newPool(t, u, Deps{})
		f := front(t, p, nil, nil)
		for i := 0; i < 4; i++ {
			if code, body := get(t, f.Client(), "GET", f.URL, nil); code != 200 || body != "live" {
				t.Fatalf("GET %d: %d %q", i, code, body)
			}
		}
		u1 := parseUpstream(t, "only503", []string{addr(busy)}, "    retries: {attempts: 2, on: [\"503\"]}\n")
		f1 := front(t, newPool(t, u1, Deps{}), nil, nil)
		if code, body := get(t, f1.Client(), "GET", f1.URL, nil); code != 503 || body != "busy" {
			t.Fatalf("single endpoint: %d %q, want the upstream's own 503", code, body)
		}
	})
}

func TestPassiveEjection(t *testing.T) {
	var mu sync.Mutex
	failing := true
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		f := failing
		mu.Unlock()
		if f {
			w.WriteHeader(500)
			return
		}
		io.WriteString(w, "flaky")
	}))
	defer flaky.Close()
	good := named(t, "good")
	events := make(chan bool, 4)
	m, _ := NewMetrics(nil)
	deps := Deps{Metrics: m, hooks: &testHooks{onEject: func(_ string, ej bool) { events <- ej }}}
	// A long ejection_time, so the ejected phase cannot end while the
	// test looks at it; the return is triggered by hand, as the timer
	// would (the timer itself is tested below).
	u := parseUpstream(t, "outlier", []string{addr(flaky), addr(good)},
		"    outlier_detection: {consecutive_failures: 2, ejection_time: 1h, max_ejection_percent: 50}\n")
	p := newPool(t, u, deps)
	p.current.Store(true)
	f := front(t, p, nil, nil)

	fails := 0
	for fails < 2 {
		if code, _ := get(t, f.Client(), "GET", f.URL, nil); code == 500 {
			fails++
		}
	}
	if ej := <-events; !ej {
		t.Fatal("want an ejection")
	}
	if v := metricValue(m.healthy.WithLabelValues("outlier", addr(flaky))); v != 0 {
		t.Fatalf("health gauge of the ejected endpoint = %v", v)
	}
	for i := 0; i < 10; i++ {
		if code, body := get(t, f.Client(), "GET", f.URL, nil); code != 200 || body != "good" {
			t.Fatalf("while ejected: %d %q", code, body)
		}
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	p.unEject(p.eps[0])
	if ej := <-events; ej {
		t.Fatal("want the return from ejection")
	}
	if v := metricValue(m.healthy.WithLabelValues("outlier", addr(flaky))); v != 1 {
		t.Fatalf("health gauge after the return = %v", v)
	}
	seen := map[string]bool{}
	for i := 0; i < 4; i++ {
		_, body := get(t, f.Client(), "GET", f.URL, nil)
		seen[body] = true
	}
	if !seen["flaky"] {
		t.Fatalf("returned endpoint gets no traffic: %v", seen)
	}
	if n := metricValue(m.ejections.WithLabelValues("outlier", addr(flaky))); n != 1 {
		t.Fatalf("ejections = %v", n)
	}

	t.Run("ejection_time ends the ejection", func(t *testing.T) {
		events := make(chan bool, 4)
		u := parseUpstream(t, "outlier2", []string{addr(flaky), addr(good)},
			"    outlier_detection: {consecutive_failures: 1, ejection_time: 50ms}\n")
		p := newPool(t, u, Deps{hooks: &testHooks{onEject: func(_ string, ej bool) { events <- ej }}})
		p.failure(p.eps[0], "test")
		if !<-events || <-events {
			t.Fatal("want an ejection, then its end")
		}
		if p.Endpoints()[0].Ejected {
			t.Fatal("still ejected")
		}
	})
}

func TestPanicMode(t *testing.T) {
	a, b := named(t, "a"), named(t, "b")
	p := newPool(t, parseUpstream(t, "panic", []string{addr(a), addr(b)}, ""), Deps{})
	p.eps[0].unhealthy.Store(true)
	p.eps[1].ejected.Store(true)
	f := front(t, p, nil, nil)
	seen := map[string]bool{}
	for i := 0; i < 4; i++ {
		code, body := get(t, f.Client(), "GET", f.URL, nil)
		if code != 200 {
			t.Fatalf("every endpoint unavailable: %d, want traffic to all (fail open)", code)
		}
		seen[body] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("panic mode should spread over all endpoints: %v", seen)
	}
}

func TestMaxEjectionPercent(t *testing.T) {
	bad := func() *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) }))
		t.Cleanup(s.Close)
		return s
	}
	a, b := bad(), bad()
	u := parseUpstream(t, "cap", []string{addr(a), addr(b)},
		"    outlier_detection: {consecutive_failures: 1, ejection_time: 1h, max_ejection_percent: 50}\n")
	p := newPool(t, u, Deps{})
	f := front(t, p, nil, nil)
	for i := 0; i < 6; i++ {
		if code, _ := get(t, f.Client(), "GET", f.URL, nil); code != 502 {
			t.Fatalf("status %d", code)
		}
	}
	n := 0
	for _, e := range p.Endpoints() {
		if e.Ejected {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d of 2 endpoints ejected, max_ejection_percent 50 allows 1", n)
	}
}

func TestActiveHealthCheck(t *testing.T) {
	var mu sync.Mutex
	status := 200
	checked := named(t, "x") // replaced below
	checked.Close()
	checked = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			mu.Lock()
			s := status
			mu.Unlock()
			w.WriteHeader(s)
			return
		}
		io.WriteString(w, "checked")
	}))
	defer checked.Close()
	other := named(t, "other")
	notify, rounds := signal()
	m, _ := NewMetrics(nil)
	u := parseUpstream(t, "hc", []string{addr(checked), addr(other)},
		"    health_check: {path: /healthz, interval: 100ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 2, expected_status: \"200-299\"}\n")
	p := newPool(t, u, Deps{Metrics: m, hooks: &testHooks{onCheck: notify}})
	p.current.Store(true)
	healthy := func() bool { return p.Endpoints()[0].Healthy }
	waitFor(t, rounds, p.HealthKnown)
	if !healthy() {
		t.Fatal("endpoint answering 200 is unhealthy")
	}
	mu.Lock()
	status = 503
	mu.Unlock()
	waitFor(t, rounds, func() bool { return !healthy() })
	if v := metricValue(m.healthy.WithLabelValues("hc", addr(checked))); v != 0 {
		t.Fatalf("gauge %v", v)
	}
	f := front(t, p, nil, nil)
	for i := 0; i < 6; i++ {
		if _, body := get(t, f.Client(), "GET", f.URL, nil); body != "other" {
			t.Fatalf("unhealthy endpoint got traffic: %q", body)
		}
	}
	mu.Lock()
	status = 204
	mu.Unlock()
	waitFor(t, rounds, healthy)
	if v := metricValue(m.healthy.WithLabelValues("hc", addr(checked))); v != 1 {
		t.Fatalf("gauge %v", v)
	}
}

// echo answers the request headers as JSON.
func echo(t testing.TB) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("Host", r.Host)
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End", "kept")
		w.Header().Set("Alt-Svc", `h3=":9999"`)
		json.NewEncoder(w).Encode(h)
	}))
	t.Cleanup(s.Close)
	return s
}

func TestForwardedAndHopHeaders(t *testing.T) {
	up := echo(t)
	p := newPool(t, parseUpstream(t, "hdr", []string{addr(up)}, ""), Deps{})
	reqOps, _ := CompileHeaderOps(configs.HeaderOps{Set: []string{"X-Route: r1"}, Remove: []string{"X-Drop"}})
	respOps, _ := CompileHeaderOps(configs.HeaderOps{Add: []string{"X-Served-By: ztgate"}})
	for _, tc := range []struct {
		name      string
		trusted   bool
		wantXFF   string
		wantProto string
		wantHost  string
	}{
		{"trusted peer: its own address is appended", true, "203.0.113.9, 127.0.0.1", "http", "orig.example"},
		{"untrusted peer replaces", false, "198.51.100.7", "https", "front.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := front(t, p, func(r *http.Request) *RequestInfo {
				return &RequestInfo{ClientIP: netip.MustParseAddr("198.51.100.7"), TrustedPeer: tc.trusted, Proto: "https",
					RequestID: "rid-42", RequestHeaders: reqOps, ResponseHeaders: respOps, Extra: []Header{{"X-Authz", "ok"}}}
			}, nil)
			req, _ := http.NewRequest("GET", f.URL+"/p?q=1", nil)
			req.Host = "front.example"
			req.Header.Set("X-Forwarded-For", "203.0.113.9")
			req.Header.Set("X-Forwarded-Proto", "http")
			req.Header.Set("X-Forwarded-Host", "orig.example")
			req.Header.Set("Forwarded", "for=203.0.113.9")
			req.Header.Set("Connection", "X-Secret, keep-alive")
			req.Header.Set("X-Secret", "hop")
			req.Header.Set("Keep-Alive", "timeout=5")
			req.Header.Set("Proxy-Authorization", "Basic eDp5")
			req.Header.Set("TE", "trailers")
			req.Header.Set("X-Drop", "1")
			req.Header.Set("X-Request-Id", "client-chosen")
			res, err := f.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var got http.Header
			if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			for k, want := range map[string]string{
				"X-Forwarded-For": tc.wantXFF, "X-Forwarded-Proto": tc.wantProto, "X-Forwarded-Host": tc.wantHost,
				"X-Request-Id": "rid-42", "Host": "front.example", "Te": "trailers", "X-Route": "r1", "X-Authz": "ok",
			} {
				if g := got.Get(k); g != want {
					t.Errorf("upstream saw %s = %q, want %q", k, g, want)
				}
			}
			for _, k := range []string{"X-Secret", "Keep-Alive", "Proxy-Authorization", "X-Drop", "Upgrade"} {
				if g := got.Get(k); g != "" {
					t.Errorf("upstream saw hop-by-hop or removed %s = %q", k, g)
				}
			}
			if g := got.Get("Forwarded"); tc.trusted != (g != "") {
				t.Errorf("Forwarded = %q with trusted=%v", g, tc.trusted)
			}
			if res.Header.Get("X-Hop") != "" || res.Header.Get("Keep-Alive") != "" {
				t.Errorf("client saw the upstream's hop-by-hop headers: %v", res.Header)
			}
			if res.Header.Get("Alt-Svc") != "" {
				t.Errorf("the upstream's Alt-Svc reached the client")
			}
			if res.Header.Get("X-End") != "kept" || res.Header.Get("X-Served-By") != "ztgate" {
				t.Errorf("response headers: %v", res.Header)
			}
		})
	}
}

func TestStreaming(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "data: second\n\n")
	}))
	defer up.Close()
	defer close(release)
	p := newPool(t, parseUpstream(t, "sse", []string{addr(up)}, ""), Deps{})
	f := front(t, p, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", f.URL, nil)
	res, err := f.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first chunk before the upstream finished: %q %v", line, err)
	}
}

func TestUpstreamBodyStreamsRequest(t *testing.T) {
	// The request body flows to the upstream while the client still sends.
	got := make(chan string, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		_, err := io.ReadFull(r.Body, buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf)
		io.Copy(io.Discard, r.Body)
	}))
	defer up.Close()
	p := newPool(t, parseUpstream(t, "reqstream", []string{addr(up)}, ""), Deps{})
	f := front(t, p, nil, nil)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		res, err := f.Client().Post(f.URL, "text/plain", pr)
		if err == nil {
			res.Body.Close()
		}
		done <- err
	}()
	pw.Write([]byte("hello"))
	if s := <-got; s != "hello" {
		t.Fatalf("upstream read %q", s)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestH2AndTLSUpstreams(t *testing.T) {
	proto := func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) }
	h2c := httptest.NewUnstartedServer(http.HandlerFunc(proto))
	h2c.Config.Protocols = new(http.Protocols)
	h2c.Config.Protocols.SetHTTP1(true)
	h2c.Config.Protocols.SetUnencryptedHTTP2(true)
	h2c.Start()
	defer h2c.Close()
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(proto))
	tlsSrv.EnableHTTP2 = true
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o600)
	other := httptest.NewUnstartedServer(http.HandlerFunc(proto))
	other.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	other.StartTLS()
	defer other.Close()

	for _, tc := range []struct {
		name, endpoint, body string
		want                 string
		wantCode             int
	}{
		{"h1 plain", addr(h2c), "", "HTTP/1.1", 200},
		{"h2c prior knowledge", addr(h2c), "    http2: true\n", "HTTP/2.0", 200},
		{"TLS h1 with ca_file", addr(tlsSrv), "    tls: {ca_file: " + ca + "}\n", "HTTP/1.1", 200},
		{"TLS h2 via ALPN", addr(tlsSrv), "    http2: true\n    tls: {ca_file: " + ca + "}\n", "HTTP/2.0", 200},
		{"TLS with server_name", addr(tlsSrv), "    tls: {ca_file: " + ca + ", server_name: example.com}\n", "HTTP/1.1", 200},
		{"TLS wrong name", addr(tlsSrv), "    tls: {ca_file: " + ca + ", server_name: wrong.test}\n", "upstream connect error (request id req-1)\n", 502},
		{"TLS unknown CA", addr(other), "    tls: {ca_file: " + ca + "}\n", "upstream connect error (request id req-1)\n", 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := parseUpstream(t, "proto", []string{tc.endpoint}, tc.body+"    retries: {attempts: 0}\n")
			errs := make(chan error, 1)
			f := front(t, newPool(t, u, Deps{}), nil, errs)
			code, body := get(t, f.Client(), "GET", f.URL, nil)
			if code != tc.wantCode || body != tc.want {
				t.Fatalf("got %d %q, want %d %q", code, body, tc.wantCode, tc.want)
			}
			if code != 200 {
				var e *Error
				if err := <-errs; !errors.As(err, &e) || e.Kind != KindTLS {
					t.Fatalf("error %v, want tls_failure", err)
				}
			}
		})
	}
}

func TestSPIFFEWithoutSource(t *testing.T) {
	u := parseUpstream(t, "mesh", []string{"127.0.0.1:1"}, "    tls: {spiffe_id: \"spiffe://example.org/ns/default/sa/details\"}\n"+spiffeIdentity)
	errs := make(chan error, 1)
	f := front(t, newPool(t, u, Deps{}), nil, errs)
	code, body := get(t, f.Client(), "GET", f.URL, nil)
	if code != 503 || body != "upstream identity unavailable (request id req-1)\n" {
		t.Fatalf("%d %q", code, body)
	}
	if err := <-errs; !strings.Contains(err.Error(), "no SVID source") {
		t.Fatalf("log cause %q should say what is missing", err)
	}
}

func TestSPIFFESeam(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "mesh") }))
	defer srv.Close()
	var asked *configs.UpstreamTLS
	deps := Deps{SPIFFETLS: func(t *configs.UpstreamTLS) (*tls.Config, error) {
		asked = t
		// A real source verifies the SPIFFE ID; this one trusts the test CA.
		return srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone(), nil
	}}
	u := parseUpstream(t, "mesh", []string{addr(srv)}, "    tls: {spiffe_id: \"spiffe://example.org/ns/default/sa/details\"}\n"+spiffeIdentity)
	p := newPool(t, u, deps)
	if asked == nil || asked.SPIFFEID != "spiffe://example.org/ns/default/sa/details" {
		t.Fatalf("seam called with %+v", asked)
	}
	f := front(t, p, nil, nil)
	if code, body := get(t, f.Client(), "GET", f.URL, nil); code != 200 || body != "mesh" {
		t.Fatalf("%d %q", code, body)
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	p := newPool(t, parseUpstream(t, "slow", []string{addr(slow)}, ""), Deps{})
	errs := make(chan error, 1)
	f := front(t, p, func(r *http.Request) *RequestInfo {
		return &RequestInfo{RequestID: "t1", Timeout: 50 * time.Millisecond}
	}, errs)
	code, body := get(t, f.Client(), "GET", f.URL, nil)
	if code != 504 || body != "upstream request timeout (request id t1)\n" {
		t.Fatalf("%d %q", code, body)
	}
	var e *Error
	if err := <-errs; !errors.As(err, &e) || e.Kind != KindTimeout {
		t.Fatalf("%v", err)
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString("echo " + line)
			brw.Flush()
		}
	}))
	defer up.Close()
	dial := func(t *testing.T, f *httptest.Server) (net.Conn, *bufio.Reader) {
		conn, err := net.Dial("tcp", f.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		if err != nil || res.StatusCode != 101 {
			t.Fatalf("%v %v", res, err)
		}
		return conn, br
	}
	t.Run("echo", func(t *testing.T) {
		f := front(t, newPool(t, parseUpstream(t, "ws", []string{addr(up)}, ""), Deps{}), nil, nil)
		conn, br := dial(t, f)
		for _, msg := range []string{"ping\n", "again\n"} {
			io.WriteString(conn, msg)
			line, err := br.ReadString('\n')
			if err != nil || line != "echo "+msg {
				t.Fatalf("%q %v", line, err)
			}
		}
	})
	t.Run("idle connection is closed", func(t *testing.T) {
		u := parseUpstream(t, "ws", []string{addr(up)}, "    stream_idle_timeout: 50ms\n")
		f := front(t, newPool(t, u, Deps{}), nil, nil)
		_, br := dial(t, f)
		if _, err := br.ReadString('\n'); err != io.EOF {
			t.Fatalf("want EOF after stream_idle_timeout, got %v", err)
		}
	})
}

func TestMaxConnectionAge(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"http1", ""},
		{"h2c", "    http2: true\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			peers := map[string]bool{}
			up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				peers[r.RemoteAddr] = true
				mu.Unlock()
			}))
			up.Config.Protocols = new(http.Protocols)
			up.Config.Protocols.SetHTTP1(true)
			up.Config.Protocols.SetUnencryptedHTTP2(true)
			up.Start()
			defer up.Close()
			rotated := make(chan struct{}, 8)
			// The timer's own period is checked below; here rotation is
			// triggered by hand so that nothing depends on timing.
			u := parseUpstream(t, "aged", []string{addr(up)}, tc.body+"    max_connection_age: 1h\n")
			p := newPool(t, u, Deps{hooks: &testHooks{onRotate: func() { rotated <- struct{}{} }}})
			f := front(t, p, nil, nil)
			get(t, f.Client(), "GET", f.URL, nil)
			get(t, f.Client(), "GET", f.URL, nil)
			mu.Lock()
			if len(peers) != 1 {
				t.Fatalf("no keep-alive before max_connection_age: %v", peers)
			}
			mu.Unlock()
			p.rotateTransport()
			<-rotated
			get(t, f.Client(), "GET", f.URL, nil)
			mu.Lock()
			defer mu.Unlock()
			if len(peers) != 2 {
				t.Fatalf("connection outlived max_connection_age: upstream saw peers %v", peers)
			}
		})
	}
	t.Run("timer", func(t *testing.T) {
		rotated := make(chan struct{}, 8)
		u := parseUpstream(t, "aged", []string{"127.0.0.1:1"}, "    max_connection_age: 50ms\n")
		newPool(t, u, Deps{hooks: &testHooks{onRotate: func() {
			select {
			case rotated <- struct{}{}:
			default:
			}
		}}})
		<-rotated
		<-rotated
	})
}

func TestStatusMapping(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		code int
	}{
		{KindNoEndpoint, 503}, {KindTLSUnavailable, 503}, {KindConnect, 502}, {KindTLS, 502},
		{KindReset, 502}, {KindProtocol, 502}, {KindTimeout, 504}, {KindClientGone, 499}, {KindAborted, 502},
	} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			err := &Error{Kind: tc.kind, Upstream: "u", Err: errors.New("dial tcp 10.0.0.1:80: secret detail")}
			if got := Status(err); got != tc.code {
				t.Fatalf("Status = %d, want %d", got, tc.code)
			}
			rec := httptest.NewRecorder()
			WriteError(rec, err, "abc")
			if Reason(err) != tc.kind.String() || strings.Contains(PublicMessage(err), "secret") {
				t.Fatalf("Reason %q PublicMessage %q", Reason(err), PublicMessage(err))
			}
			if tc.kind == KindClientGone {
				if rec.Body.Len() != 0 {
					t.Fatal("wrote to a client that is gone")
				}
				return
			}
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), "abc") || strings.Contains(rec.Body.String(), "secret") {
				t.Fatalf("%d %q", rec.Code, rec.Body.String())
			}
		})
	}
	if Status(errors.New("other")) != 502 {
		t.Fatal("unknown errors must be 502")
	}
}

func TestMetricsRegister(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("second registration must fail: metrics are per process")
	}
}

// spiffeIdentity is the identity section SPIFFE upstreams need to pass
// validation; nothing dials it in these tests.
const spiffeIdentity = "identity: {workload_api: \"unix:///run/spire/agent.sock\"}\n"

// selfSigned is a certificate for 127.0.0.1 from no CA the tests trust.
func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "other"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestTrailers(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "body")
		w.Header().Set("X-Checksum", "abc")
	}))
	defer up.Close()
	f := front(t, newPool(t, parseUpstream(t, "tr", []string{addr(up)}, ""), Deps{}), nil, nil)
	res, err := f.Client().Get(f.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if b, _ := io.ReadAll(res.Body); string(b) != "body" {
		t.Fatalf("%q", b)
	}
	if got := res.Trailer.Get("X-Checksum"); got != "abc" {
		t.Fatalf("trailer %q (trailers %v)", got, res.Trailer)
	}
}

func TestAbortedBodyIsNotComplete(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "only part")
		w.(http.Flusher).Flush()
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	}))
	defer up.Close()
	errs := make(chan error, 1)
	f := front(t, newPool(t, parseUpstream(t, "ab", []string{addr(up)}, ""), Deps{}), nil, errs)
	// The client gets an error: at once if the status line was still
	// buffered, or while reading the body.
	if res, err := f.Client().Get(f.URL); err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
		if err == nil {
			t.Fatal("client read a truncated body without an error")
		}
	}
	var e *Error
	if err := <-errs; !errors.As(err, &e) || e.Kind != KindAborted || !e.HeadersSent {
		t.Fatalf("%v", err)
	}
}

func TestStreamIdleTimeout(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "start")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer up.Close()
	defer close(release)
	errs := make(chan error, 1)
	u := parseUpstream(t, "stall", []string{addr(up)}, "    stream_idle_timeout: 50ms\n")
	f := front(t, newPool(t, u, Deps{}), nil, errs)
	res, err := f.Client().Get(f.URL)
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	if err == nil {
		t.Fatal("a stalled body ended as if complete")
	}
	var e *Error
	if err := <-errs; !errors.As(err, &e) || e.Kind != KindTimeout || !e.HeadersSent {
		t.Fatalf("%v", err)
	}
}

func TestSPIFFENoSVIDIs503(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	errNoSVID := errors.New("no valid SVID")
	deps := Deps{
		SPIFFEUnavailable: errNoSVID,
		SPIFFETLS: func(*configs.UpstreamTLS) (*tls.Config, error) {
			// As the SVID source does while it holds no SVID: every
			// handshake fails with its sentinel.
			return &tls.Config{InsecureSkipVerify: true, VerifyPeerCertificate: func([][]byte, [][]*x509.Certificate) error {
				return fmt.Errorf("identity: %w: source not ready", errNoSVID)
			}}, nil
		},
	}
	u := parseUpstream(t, "mesh", []string{addr(srv)}, "    tls: {spiffe_id: \"spiffe://example.org/ns/default/sa/details\"}\n"+spiffeIdentity)
	errs := make(chan error, 1)
	p := newPool(t, u, deps)
	f := front(t, p, nil, errs)
	for i := 0; i < 6; i++ {
		if code, _ := get(t, f.Client(), "GET", f.URL, nil); code != 503 {
			t.Fatalf("status %d, want 503", code)
		}
		var e *Error
		if err := <-errs; !errors.As(err, &e) || e.Kind != KindTLSUnavailable {
			t.Fatalf("%v", err)
		}
	}
	if p.Endpoints()[0].Ejected {
		t.Fatal("the endpoint was ejected for the gateway's own missing SVID")
	}
}
