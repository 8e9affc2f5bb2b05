package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ztgate/ztgate/configs"
)

func reloadConfig(dir, addr, body string) string {
	return fmt.Sprintf(`
storage: %s
listeners:
  - { name: public, address: "%s", protocols: [h1, h2], tls: { names: [localhost] } }
routes:
  - { name: r, direct_response: { status: 200, body: "%s" } }
`, dir, addr, body)
}

// TestReloadUnderLoad alternates two configs 20 times while clients send
// a bounded number of requests: no request may fail, and both bodies
// must be seen.
func TestReloadUnderLoad(t *testing.T) {
	h := newHarness(t, nil)
	dir := t.TempDir()
	h.apply(reloadConfig(dir, "127.0.0.1:0", "A"))
	addr := h.srv.Addr("public").String()

	const workers, perWorker = 8, 250
	var failures atomic.Int64
	var seenA, seenB atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		proto := []string{"h1", "h2"}[w%2]
		c := h.client(proto)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				resp, err := c.Get("https://" + addr + "/")
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode != 200:
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d", resp.StatusCode))
				case string(b) == "A":
					seenA.Add(1)
				case string(b) == "B":
					seenB.Add(1)
				}
			}
		}()
	}
	go func() { wg.Wait(); close(stop) }()
	for i := 0; i < 20; i++ {
		body := []string{"B", "A"}[i%2]
		h.apply(reloadConfig(dir, addr, body))
		select {
		case <-stop:
		case <-time.After(10 * time.Millisecond):
		}
	}
	<-stop
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed across 20 reloads; first: %v", n, workers*perWorker, firstErr.Load())
	}
	if seenA.Load() == 0 || seenB.Load() == 0 {
		t.Logf("bodies seen: A=%d B=%d (load finished before both configs served)", seenA.Load(), seenB.Load())
	}
	// The socket survived every reload.
	if got := h.srv.Addr("public").String(); got != addr {
		t.Fatalf("listener moved from %s to %s", addr, got)
	}
}

// TestBrokenReloadKeepsServing: a config that cannot be applied (here:
// a new listener on a port another process holds) changes nothing.
func TestBrokenReloadKeepsServing(t *testing.T) {
	h := newHarness(t, nil)
	dir := t.TempDir()
	h.apply(reloadConfig(dir, "127.0.0.1:0", "old"))
	addr := h.srv.Addr("public").String()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg, err := configs.Parse("test.yaml", []byte(fmt.Sprintf(`
storage: %s
listeners:
  - { name: public, address: "%s", tls: { names: [localhost] } }
  - { name: second, address: "%s", tls: { names: [localhost] } }
routes:
  - { name: r, direct_response: { status: 200, body: "new" } }
`, dir, addr, busy.Addr())), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = h.srv.Apply(cfg)
	if err == nil || !strings.Contains(err.Error(), "listeners[1].address") {
		t.Fatalf("apply with a busy port: %v, want an error naming listeners[1].address", err)
	}
	resp, body := h.do(h.client("h1"), "public", "GET", "localhost", "/")
	if resp.StatusCode != 200 || body != "old" {
		t.Fatalf("after a refused reload: %d %q", resp.StatusCode, body)
	}
	if h.srv.Addr("second") != nil {
		t.Fatal("the refused config's listener exists")
	}
}

// slowExt forwards to a handler that blocks until released, so a test
// can hold requests in flight across a reload or shutdown.
type slowExt struct {
	started chan struct{}
	release chan struct{}
}

func (s *slowExt) ext(cfg *configs.Config) (*Extension, error) {
	body := cfg.Routes[0].Name
	return &Extension{Forward: func(w http.ResponseWriter, req *Request) error {
		s.started <- struct{}{}
		<-s.release
		io.WriteString(w, body)
		return nil
	}}, nil
}

func slowConfig(dir, addr, name string) string {
	return fmt.Sprintf(`
storage: %s
listeners:
  - { name: public, address: "%s", tls: { names: [localhost] } }
upstreams:
  - { name: slow, endpoints: ["127.0.0.1:1"] }
routes:
  - { name: %s, upstream: slow }
`, dir, addr, name)
}

// TestInFlightFinishesOnOldSnapshot: a request that started before a
// reload completes with the old config's behaviour.
func TestInFlightFinishesOnOldSnapshot(t *testing.T) {
	se := &slowExt{started: make(chan struct{}, 1), release: make(chan struct{})}
	h := newHarness(t, se.ext)
	dir := t.TempDir()
	h.apply(slowConfig(dir, "127.0.0.1:0", "old"))
	addr := h.srv.Addr("public").String()
	c := h.client("h2")
	got := make(chan string, 1)
	go func() {
		resp, err := c.Get("https://" + addr + "/")
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-se.started
	h.apply(slowConfig(dir, addr, "new"))
	close(se.release)
	if b := <-got; b != "old" {
		t.Fatalf("in-flight request answered %q, want the old snapshot's \"old\"", b)
	}
	go func() { <-se.started }()
	if _, b := h.do(c, "public", "GET", "localhost", "/"); b != "new" {
		t.Fatalf("new request answered %q, want \"new\"", b)
	}
}

// TestAddressChange: a changed address opens the new socket and closes
// the old one.
func TestAddressChange(t *testing.T) {
	h := newHarness(t, nil)
	dir := t.TempDir()
	h.apply(reloadConfig(dir, "127.0.0.1:0", "one"))
	old := h.srv.Addr("public").String()
	h.apply(reloadConfig(dir, "127.0.0.2:0", "two"))
	now := h.srv.Addr("public").String()
	if !strings.HasPrefix(now, "127.0.0.2:") {
		t.Fatalf("listener at %s after moving to 127.0.0.2", now)
	}
	if _, b := h.do(h.client("h1"), "public", "GET", "localhost", "/"); b != "two" {
		t.Fatalf("new address answered %q", b)
	}
	c := h.client("h1")
	if _, err := c.Get("https://" + old + "/"); err == nil {
		t.Fatalf("old address %s still accepts connections", old)
	}
}

// TestGracefulShutdown: SIGTERM's path lets in-flight slow requests
// complete and refuses new connections.
func TestGracefulShutdown(t *testing.T) {
	se := &slowExt{started: make(chan struct{}, 4), release: make(chan struct{})}
	h := newHarness(t, se.ext)
	h.apply(slowConfig(t.TempDir(), "127.0.0.1:0", "done"))
	addr := h.srv.Addr("public").String()
	const n = 3
	results := make(chan string, n)
	for i := 0; i < n; i++ {
		c := h.client([]string{"h1", "h2"}[i%2])
		go func() {
			resp, err := c.Get("https://" + addr + "/")
			if err != nil {
				results <- "error: " + err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- string(b)
		}()
	}
	for i := 0; i < n; i++ {
		<-se.started
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		shut <- h.srv.Shutdown(ctx)
	}()
	// Shutdown has begun once new connections are refused.
	for i := 0; ; i++ {
		c := h.client("h1")
		if _, err := c.Get("https://" + addr + "/"); err != nil {
			break
		}
		if i > 200 {
			t.Fatal("new connections still accepted during shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(se.release)
	for i := 0; i < n; i++ {
		if r := <-results; r != "done" {
			t.Fatalf("in-flight request %d: %q", i, r)
		}
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// TestNoGoroutineLeakAfterShutdown checks that reloads and shutdown
// leave no goroutines behind.
func TestNoGoroutineLeakAfterShutdown(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		h := newHarness(t, nil)
		dir := t.TempDir()
		h.apply(reloadConfig(dir, "127.0.0.1:0", "x"))
		addr := h.srv.Addr("public").String()
		c := h.client("h2")
		for i := 0; i < 5; i++ {
			h.apply(fmt.Sprintf(`
storage: %s
listeners:
  - { name: public, address: "%s", protocols: [h1, h2], tls: { names: [localhost] }, limits: { idle_timeout: %ds } }
routes:
  - { name: r, direct_response: { status: 200 } }
`, dir, addr, 60+i))
			h.do(c, "public", "GET", "localhost", "/")
		}
		c.Transport.(*http.Transport).CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.srv.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}()
	var after int
	for i := 0; i < 200; i++ {
		after = runtime.NumGoroutine()
		if after <= before+2 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	t.Fatalf("goroutines: %d before, %d after shutdown\n%s", before, after, buf[:runtime.Stack(buf, true)])
}

// TestRetiredRuntimeReleasedAfterLastRequest: a snapshot replaced while
// a request runs on it is released only when that request ends.
func TestRetiredRuntimeReleasedAfterLastRequest(t *testing.T) {
	se := &slowExt{started: make(chan struct{}, 1), release: make(chan struct{})}
	var released atomic.Int32
	ext := func(cfg *configs.Config) (*Extension, error) {
		e, _ := se.ext(cfg)
		name := cfg.Routes[0].Name
		e.Release = func() {
			if name == "old" {
				released.Add(1)
			}
		}
		return e, nil
	}
	h := newHarness(t, ext)
	dir := t.TempDir()
	h.apply(slowConfig(dir, "127.0.0.1:0", "old"))
	addr := h.srv.Addr("public").String()
	c := h.client("h1")
	got := make(chan string, 1)
	go func() {
		resp, err := c.Get("https://" + addr + "/")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-se.started
	h.apply(slowConfig(dir, addr, "new"))
	if n := released.Load(); n != 0 {
		t.Fatalf("old snapshot released %d times while a request still ran on it", n)
	}
	close(se.release)
	if b := <-got; b != "old" {
		t.Fatalf("in-flight request: %q", b)
	}
	// done() runs as the handler returns; the client may see the body
	// a moment before.
	for i := 0; i < 500 && released.Load() == 0; i++ {
		time.Sleep(2 * time.Millisecond)
	}
	if n := released.Load(); n != 1 {
		t.Fatalf("old snapshot released %d times after its last request, want 1", n)
	}
}
