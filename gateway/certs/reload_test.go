package certs

import (
	"sync"
	"testing"
)

// TestApplyUnderHandshakes alternates two configs (a files certificate
// swapped for another, a local CA name added and removed) while clients
// keep handshaking for the name both configs serve: none may fail.
func TestApplyUnderHandshakes(t *testing.T) {
	dir, storage := t.TempDir(), t.TempDir()
	ca := newTestCA(t)
	c1, k1, _ := ca.leaf(t, dir, "one", "site.ztgate.test")
	c2, k2, _ := ca.leaf(t, dir, "two", "site.ztgate.test")
	extra := func(names string) string {
		return "  - name: local\n    address: \"127.0.0.1:9443\"\n    tls: { names: [" + names + "] }\n"
	}
	cfgA := parseConfig(t, filesConfig(storage, [2]string{c1, k1})+extra("localhost"))
	cfgB := parseConfig(t, filesConfig(storage, [2]string{c2, k2})+extra("localhost, other.ztgate.test"))
	m := newManager(t, cfgA, Deps{})
	filesAddr, localAddr := serveTLS(t, m, "files"), serveTLS(t, m, "local")
	localRoots := poolFromFile(t, m.LocalCARoot())

	const clients, perClient, reloads = 4, 50, 20
	errs := make(chan error, clients*perClient*2)
	// progress paces the reloads between handshakes, so they interleave.
	progress := make(chan struct{}, clients*perClient*2)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perClient {
				if _, err := handshake(filesAddr, "site.ztgate.test", ca.pool); err != nil {
					errs <- err
				}
				if _, err := handshake(localAddr, "localhost", localRoots); err != nil {
					errs <- err
				}
				progress <- struct{}{}
			}
		}()
	}
	for i := range reloads {
		for range clients {
			<-progress
		}
		cfg := cfgA
		if i%2 == 0 {
			cfg = cfgB
		}
		if err := m.Apply(cfg); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n < 5 {
			t.Error(err)
		}
		n++
	}
	if n > 0 {
		t.Fatalf("%d of %d handshakes failed during reloads", n, clients*perClient*2)
	}
	if err := m.Ready(); err != nil {
		t.Fatal(err)
	}
}
