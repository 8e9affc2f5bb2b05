package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
)

// recordingWriter keeps every Write separately and signals each one.
type recordingWriter struct {
	mu     sync.Mutex
	writes []string
	wrote  chan struct{}
	err    error
}

func newRecordingWriter() *recordingWriter {
	return &recordingWriter{wrote: make(chan struct{}, 1024)}
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes = append(w.writes, string(p))
	w.mu.Unlock()
	w.wrote <- struct{}{}
	return len(p), w.err
}

func (w *recordingWriter) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes...)
}

func TestLineBuffer(t *testing.T) {
	line := func(i int) string { return fmt.Sprintf("{\"n\":%04d}\n", i) } // 11 bytes

	t.Run("batches whole lines up to size", func(t *testing.T) {
		w := newRecordingWriter()
		b := NewLineBuffer(w, 35, time.Hour)
		for i := 0; i < 10; i++ {
			b.Write([]byte(line(i)))
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		got := w.all()
		var want []string
		for i := 0; i < 10; i += 3 {
			var s strings.Builder
			for j := i; j < min(i+3, 10); j++ {
				s.WriteString(line(j))
			}
			want = append(want, s.String())
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("writes %q, want %q", got, want)
		}
	})

	t.Run("a line longer than size is written alone, in order", func(t *testing.T) {
		w := newRecordingWriter()
		b := NewLineBuffer(w, 16, time.Hour)
		long := strings.Repeat("x", 40) + "\n"
		b.Write([]byte(line(1)))
		b.Write([]byte(long))
		b.Write([]byte(line(2)))
		b.Close()
		if got := w.all(); strings.Join(got, "|") != line(1)+"|"+long+"|"+line(2) {
			t.Fatalf("writes %q", got)
		}
	})

	t.Run("the interval writes a quiet buffer out", func(t *testing.T) {
		w := newRecordingWriter()
		b := NewLineBuffer(w, 4096, time.Millisecond)
		defer b.Close()
		b.Write([]byte(line(7)))
		<-w.wrote // the timer flushed; nothing else writes
		if got := w.all(); len(got) != 1 || got[0] != line(7) {
			t.Fatalf("writes %q", got)
		}
	})

	t.Run("after Close lines go straight through", func(t *testing.T) {
		w := newRecordingWriter()
		b := NewLineBuffer(w, 4096, time.Hour)
		b.Close()
		b.Write([]byte(line(1)))
		if got := w.all(); len(got) != 1 || got[0] != line(1) {
			t.Fatalf("writes %q", got)
		}
	})

	t.Run("write errors are reported by Flush", func(t *testing.T) {
		w := newRecordingWriter()
		w.err = errors.New("disk full")
		b := NewLineBuffer(w, 4096, time.Hour)
		if _, err := b.Write([]byte(line(1))); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if err := b.Flush(); err == nil || err.Error() != "disk full" {
			t.Fatalf("Flush: %v", err)
		}
	})

	t.Run("concurrent writers: every line whole and once", func(t *testing.T) {
		w := newRecordingWriter()
		w.wrote = make(chan struct{}, 100000)
		b := NewLineBuffer(w, 64, time.Microsecond)
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 200; i++ {
					b.Write([]byte(line(g*200 + i)))
				}
			}()
		}
		wg.Wait()
		b.Close()
		seen := map[string]bool{}
		for _, wr := range w.all() {
			if len(wr) > 64 || !strings.HasSuffix(wr, "\n") {
				t.Fatalf("write of %d bytes not of whole lines within size: %q", len(wr), wr)
			}
			for _, l := range strings.SplitAfter(wr, "\n") {
				if l == "" {
					continue
				}
				if len(l) != 11 || seen[l] {
					t.Fatalf("line %q torn or repeated", l)
				}
				seen[l] = true
			}
		}
		if len(seen) != 1600 {
			t.Fatalf("%d lines, want 1600", len(seen))
		}
	})
}

func BenchmarkLineBuffer(b *testing.B) {
	var sink bytes.Buffer
	lb := NewLineBuffer(&sink, 4096, time.Hour)
	p := []byte(strings.Repeat("x", 300) + "\n")
	for b.Loop() {
		lb.Write(p)
		if sink.Len() > 1<<20 {
			sink.Reset()
		}
	}
}

// TestAccessLogDeps: with Deps.AccessLog set, access lines go there (and
// not to Logger), batched by the LineBuffer under it.
func TestAccessLogDeps(t *testing.T) {
	general, access := newRecordingWriter(), newRecordingWriter()
	lb := NewLineBuffer(access, 4096, time.Hour)
	srv, err := New(Deps{
		Logger:    slog.New(slog.NewJSONHandler(general, nil)),
		AccessLog: slog.New(slog.NewJSONHandler(lb, nil)),
		Metrics:   NewMetrics(prometheus.NewRegistry()),
		Certs:     newTestCerts(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	cfg, err := configs.Parse("t.yaml", []byte(fmt.Sprintf(`
storage: %s
listeners:
  - { name: l, address: "127.0.0.1:0", tls: { names: [localhost] } }
routes:
  - { name: r, direct_response: { status: 200, body: "ok" } }
`, t.TempDir())), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	h := &listenerHandler{s: srv, name: "l"}
	for i := 0; i < 3; i++ {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "https://localhost/", nil))
	}
	if got := access.all(); len(got) != 0 {
		t.Fatalf("lines written before a flush: %q", got)
	}
	if err := lb.Flush(); err != nil {
		t.Fatal(err)
	}
	got := access.all()
	if len(got) != 1 || strings.Count(got[0], `"component":"access"`) != 3 || strings.Count(got[0], "\n") != 3 {
		t.Fatalf("access writes %q, want one write of three access lines", got)
	}
	for _, w := range general.all() {
		if strings.Contains(w, `"component":"access"`) {
			t.Fatalf("access line in the general log: %s", w)
		}
	}
}
