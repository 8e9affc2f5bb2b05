package accel

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestBenchPrintsTables runs a very short bench: it checks the table's
// shape and that handshakes succeed, never the numbers.
func TestBenchPrintsTables(t *testing.T) {
	var out bytes.Buffer
	err := Bench(context.Background(), &out, BenchOptions{
		Providers: []string{"go", "openssl", "nosuch"}, KeyTypes: []string{"ecdsa_p256", "rsa2048"},
		SignDuration: 20 * time.Millisecond, HandshakeDuration: 100 * time.Millisecond, Concurrency: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := out.String()
	t.Log("\n" + s)
	for _, w := range []string{"sign/s 1 goroutine", "handshakes/s", "rsa2048", "ecdsa_p256", "unavailable", "resumed"} {
		if !strings.Contains(s, w) {
			t.Errorf("output lacks %q", w)
		}
	}
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, "error:") {
			t.Errorf("bench cell failed: %s", line)
		}
	}
}
