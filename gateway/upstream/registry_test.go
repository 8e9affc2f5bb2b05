package upstream

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ztgate/ztgate/configs"
)

func parseUpstreams(t testing.TB, doc string) []configs.Upstream {
	t.Helper()
	cfg, err := configs.Parse("test.yaml", []byte(doc), nil)
	if err != nil {
		t.Fatalf("config:\n%s\n%v", doc, err)
	}
	return cfg.Upstreams
}

func TestRegistryKeepsUnchangedPools(t *testing.T) {
	a := named(t, "a")
	arrived := make(chan struct{})
	release := make(chan struct{})
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		io.WriteString(w, "b")
	}))
	defer b.Close()
	b2 := named(t, "b2")
	m, _ := NewMetrics(nil)
	reg := NewRegistry(Deps{Metrics: m})
	defer reg.Close()

	v1 := "upstreams:\n  - {name: a, endpoints: [" + addr(a) + "]}\n  - {name: b, endpoints: [" + addr(b) + "]}\n"
	v2 := "upstreams:\n  - {name: a, endpoints: [" + addr(a) + "]}\n  - {name: b, endpoints: [" + addr(b2) + "]}\n"
	s1, err := reg.Update(parseUpstreams(t, v1))
	if err != nil {
		t.Fatal(err)
	}
	a1, _ := s1.Pool("a")
	b1, _ := s1.Pool("b")
	a1.eps[0].unhealthy.Store(true) // state that must survive

	// A request in flight on b's old pool while the config changes.
	fb := front(t, b1, nil, nil)
	done := make(chan string)
	go func() {
		res, err := fb.Client().Get(fb.URL)
		if err != nil {
			done <- err.Error()
			return
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		done <- string(body)
	}()
	<-arrived

	s2, err := reg.Update(parseUpstreams(t, v2))
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := s2.Pool("a")
	bNew, _ := s2.Pool("b")
	if a2 != a1 {
		t.Fatal("unchanged upstream a got a new pool")
	}
	if !a2.eps[0].unhealthy.Load() {
		t.Fatal("health state of a was lost")
	}
	if bNew == b1 {
		t.Fatal("changed upstream b kept its old pool")
	}
	s1.Release()
	if b1.closed.Load() {
		t.Fatal("old pool of b closed with a request in flight")
	}
	if a1.closed.Load() {
		t.Fatal("pool a closed although s2 uses it")
	}
	close(release)
	if got := <-done; got != "b" {
		t.Fatalf("in-flight request: %q", got)
	}
	waitUntil(t, b1.closed.Load)
	if got := metricValue(m.healthy.WithLabelValues("b", addr(b2))); got != 1 {
		t.Fatalf("gauge of the new b endpoint = %v", got)
	}

	// Removing b deletes its gauge series; a survives again.
	s3, err := reg.Update(parseUpstreams(t, "upstreams:\n  - {name: a, endpoints: ["+addr(a)+"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	s2.Release()
	if a3, _ := s3.Pool("a"); a3 != a1 || a1.closed.Load() {
		t.Fatal("a did not survive the second reload")
	}
	waitUntil(t, bNew.closed.Load)
	var buf strings.Builder
	rec := httptest.NewRecorder()
	reg.StatusHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/upstreams", nil))
	buf.WriteString(rec.Body.String())
	var st struct {
		Upstreams []struct{ Name string } `json:"upstreams"`
	}
	if err := json.Unmarshal([]byte(buf.String()), &st); err != nil || len(st.Upstreams) != 1 || st.Upstreams[0].Name != "a" {
		t.Fatalf("status %s %v", buf.String(), err)
	}
	s3.Release()
	waitUntil(t, a1.closed.Load)
}

func TestRegistryFileChangeAndErrors(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	os.WriteFile(ca, certPEM, 0o600)
	doc := "upstreams:\n  - {name: s, endpoints: [" + addr(srv) + "], tls: {ca_file: " + ca + "}}\n"
	reg := NewRegistry(Deps{})
	defer reg.Close()
	s1, err := reg.Update(parseUpstreams(t, doc))
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := s1.Pool("s")
	ups := parseUpstreams(t, doc)

	// Same path, new content: a new pool.
	os.WriteFile(ca, append(certPEM, '\n'), 0o600)
	s2, err := reg.Update(ups)
	if err != nil {
		t.Fatal(err)
	}
	if p2, _ := s2.Pool("s"); p2 == p1 {
		t.Fatal("ca_file content changed but the pool was kept")
	}
	s1.Release()

	if err := Check(ups); err != nil {
		t.Fatalf("Check: %v", err)
	}
	// A broken file is refused and the current set keeps serving.
	os.WriteFile(ca, []byte("not a certificate"), 0o600)
	if err := Check(ups); err == nil || !strings.Contains(err.Error(), `upstream "s": tls.ca_file:`) {
		t.Fatalf("Check: want a ca_file error, got %v", err)
	}
	if _, err := reg.Update(ups); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Fatalf("want a ca_file error, got %v", err)
	}
	os.Remove(ca)
	if _, err := reg.Update(ups); err == nil || !strings.Contains(err.Error(), `upstream "s"`) {
		t.Fatalf("want a missing-file error naming the upstream, got %v", err)
	}
	p2, _ := s2.Pool("s")
	if p2.closed.Load() {
		t.Fatal("a failed update closed the serving pool")
	}
	s2.Release()
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
		defer up.Close()
		notify, rounds := signal()
		reg := NewRegistry(Deps{hooks: &testHooks{onCheck: notify}})
		doc := "upstreams:\n  - name: h\n    endpoints: [" + addr(up) + "]\n    max_connection_age: 1h\n" +
			"    health_check: {path: /, interval: 100ms, timeout: 100ms}\n"
		s, err := reg.Update(parseUpstreams(t, doc))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := s.Pool("h")
		waitFor(t, rounds, p.HealthKnown)
		f := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := p.Proxy(w, r, &RequestInfo{}); err != nil {
				WriteError(w, err, "")
			}
		}))
		for i := 0; i < 5; i++ {
			get(t, f.Client(), "GET", f.URL, nil)
		}
		f.Client().CloseIdleConnections()
		f.Close()
		s.Release()
		reg.Close()
	}()
	waitUntil(t, func() bool { return runtime.NumGoroutine() <= before })
}

// waitUntil polls cond, for effects with no event to wait on (a pool
// closing after its last request, goroutines exiting). The 10 s bound
// guards against hanging; no duration is asserted.
func waitUntil(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("condition not reached within 10s; goroutines:\n%s", buf[:n])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReloadUnderTraffic swaps Sets 20 times, alternating two configs
// (one upstream changes, one does not), while workers proxy requests
// through whatever Set is current, as the gateway does. No request may
// fail, and every retired pool must close.
func TestReloadUnderTraffic(t *testing.T) {
	a, b1, b2 := named(t, "a"), named(t, "b1"), named(t, "b2")
	reg := NewRegistry(Deps{})
	defer reg.Close()
	docs := [2]string{
		"upstreams:\n  - {name: a, endpoints: [" + addr(a) + "]}\n  - {name: b, endpoints: [" + addr(b1) + "]}\n",
		"upstreams:\n  - {name: b, endpoints: [" + addr(b2) + "]}\n  - {name: a, endpoints: [" + addr(a) + "]}\n",
	}
	type snap struct {
		set *Set
		wg  sync.WaitGroup // requests using this snapshot
	}
	var cur atomic.Pointer[snap]
	var mu sync.Mutex // orders Add against the retirement Wait
	s0, err := reg.Update(parseUpstreams(t, docs[0]))
	if err != nil {
		t.Fatal(err)
	}
	cur.Store(&snap{set: s0})
	f := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		s := cur.Load()
		s.wg.Add(1)
		mu.Unlock()
		defer s.wg.Done()
		p, _ := s.set.Pool(strings.TrimPrefix(r.URL.Path, "/"))
		if err := p.Proxy(w, r, &RequestInfo{RequestID: "r"}); err != nil {
			WriteError(w, err, "r")
		}
	}))
	defer f.Close()

	const workers, perWorker = 4, 250
	failures := make(chan string, workers*perWorker)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perWorker; j++ {
				name := "a"
				if j%2 == 1 {
					name = "b"
				}
				res, err := f.Client().Get(f.URL + "/" + name)
				if err != nil {
					failures <- err.Error()
					continue
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 || !strings.HasPrefix(string(body), name) {
					failures <- res.Status + " " + string(body)
				}
			}
		}()
	}
	var retired []*Pool
	for i := 1; i <= 20; i++ {
		s, err := reg.Update(parseUpstreams(t, docs[i%2]))
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		old := cur.Swap(&snap{set: s})
		mu.Unlock()
		if pb, _ := old.set.Pool("b"); pb != nil {
			retired = append(retired, pb)
		}
		if pa, _ := old.set.Pool("a"); pa != mustPool(t, s, "a") {
			t.Fatal("unchanged upstream a got a new pool on reload")
		}
		go func() {
			old.wg.Wait()
			old.set.Release()
		}()
	}
	wg.Wait()
	close(failures)
	for f := range failures {
		t.Errorf("request failed during reloads: %s", f)
	}
	for _, p := range retired {
		waitUntil(t, p.closed.Load)
	}
}

func mustPool(t testing.TB, s *Set, name string) *Pool {
	p, ok := s.Pool(name)
	if !ok {
		t.Fatalf("no pool %q", name)
	}
	return p
}

func TestRegistryKeepsIdleConnections(t *testing.T) {
	var mu sync.Mutex
	peers := map[string]bool{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		peers[r.RemoteAddr] = true
		mu.Unlock()
	}))
	defer up.Close()
	reg := NewRegistry(Deps{})
	defer reg.Close()
	doc := "upstreams:\n  - {name: a, endpoints: [" + addr(up) + "]}\n"
	proxyOnce := func(s *Set) {
		rec := httptest.NewRecorder()
		if err := mustPool(t, s, "a").Proxy(rec, httptest.NewRequest("GET", "/", nil), &RequestInfo{}); err != nil || rec.Code != 200 {
			t.Fatalf("%v %d", err, rec.Code)
		}
	}
	s1, err := reg.Update(parseUpstreams(t, doc))
	if err != nil {
		t.Fatal(err)
	}
	proxyOnce(s1)
	s2, err := reg.Update(parseUpstreams(t, doc))
	if err != nil {
		t.Fatal(err)
	}
	s1.Release()
	proxyOnce(s2)
	s2.Release()
	mu.Lock()
	defer mu.Unlock()
	if len(peers) != 1 {
		t.Fatalf("the reload dropped the idle connection: upstream saw %v", peers)
	}
}
