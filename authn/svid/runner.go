package svid

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/ztgate/ztgate/configs"
)

// runner is one running configuration of the identity section: a
// Workload API stream or a file watch, plus the static bundle watch.
// Apply replaces the runner only when the section changed.
type runner struct {
	s    *Source
	cfg  configs.Identity
	kind Kind
	addr string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	client *workloadapi.Client

	feds []*federation

	// file watch state, owned by the watch goroutine
	svidHash   [32]byte
	missing    bool
	staticHash map[string][32]byte
}

func newRunner(s *Source, cfg configs.Identity) (*runner, error) {
	r := &runner{s: s, cfg: cfg, staticHash: map[string][32]byte{}}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	switch {
	case cfg.WorkloadAPI != "":
		r.kind, r.addr = KindWorkloadAPI, cfg.WorkloadAPI
		grpcBackoff := backoff.Config{BaseDelay: cfg.Backoff.Initial, Multiplier: 1.6, Jitter: 0.2, MaxDelay: cfg.Backoff.Max}
		c, err := workloadapi.New(r.ctx,
			workloadapi.WithAddr(cfg.WorkloadAPI),
			workloadapi.WithLogger(wlLogger{r}),
			workloadapi.WithBackoffStrategy(backoffStrategy{cfg.Backoff.Initial, cfg.Backoff.Max}),
			// gRPC's own reconnect backoff (up to 120s by default) would
			// otherwise delay recovery after the agent restarts.
			workloadapi.WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{Backoff: grpcBackoff, MinConnectTimeout: 5 * time.Second})),
		)
		if err != nil {
			r.cancel()
			return nil, fmt.Errorf("workload_api %q: %w", cfg.WorkloadAPI, err)
		}
		r.client = c
	case cfg.Files != nil:
		r.kind, r.addr = KindFiles, cfg.Files.Cert
	}
	for i, fc := range cfg.Federation {
		f, err := newFederation(s, fc)
		if err != nil {
			if r.client != nil {
				_ = r.client.Close()
			}
			r.cancel()
			return nil, fmt.Errorf("federation[%d]: %w", i, err)
		}
		r.feds = append(r.feds, f)
	}
	for _, b := range cfg.TrustBundles {
		// loadStaticBundles just read these; start from their content.
		if data, err := readLimited(b.File); err == nil {
			r.staticHash[b.File] = sha256.Sum256(data)
		}
	}
	return r, nil
}

func (r *runner) start() {
	if r.kind == KindFiles {
		r.pollSVIDFiles() // ready at once when the files are there
	}
	if r.client != nil {
		r.wg.Add(1)
		go r.watchWorkloadAPI()
	}
	for _, f := range r.feds {
		r.wg.Add(1)
		go r.watchFederation(f)
	}
	if r.kind == KindFiles || len(r.cfg.TrustBundles) > 0 {
		r.wg.Add(1)
		go r.watchFiles()
	}
}

func (r *runner) stop() {
	r.cancel()
	r.wg.Wait()
	if r.client != nil {
		_ = r.client.Close()
	}
}

// watchWorkloadAPI streams X.509 contexts. go-spiffe's client reconnects
// with our backoff on every error except InvalidArgument (the agent
// refusing the request); that case is retried here too, so a
// misbehaving agent never stops the gateway from recovering.
func (r *runner) watchWorkloadAPI() {
	defer r.wg.Done()
	b := backoffStrategy{r.cfg.Backoff.Initial, r.cfg.Backoff.Max}.NewBackoff()
	for {
		err := r.client.WatchX509Context(r.ctx, wlWatcher{r})
		if r.ctx.Err() != nil {
			return
		}
		if err != nil {
			r.s.sourceError(r, "rejected", fmt.Errorf("workload API %s: %w", r.addr, err))
		}
		select {
		case <-time.After(b.Next()):
		case <-r.ctx.Done():
			return
		}
	}
}

type wlWatcher struct{ r *runner }

func (w wlWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	r := w.r
	want := r.cfg.SPIFFEID
	for _, sv := range c.SVIDs {
		if want == "" || sv.ID.String() == want {
			r.s.update(r, sv, c.Bundles)
			return
		}
	}
	ids := make([]string, len(c.SVIDs))
	for i, sv := range c.SVIDs {
		ids[i] = sv.ID.String()
	}
	r.s.update(r, nil, c.Bundles)
	r.s.sourceError(r, "no_matching_svid", fmt.Errorf("the Workload API issued %v but identity.spiffe_id is %s", ids, want))
}

func (w wlWatcher) OnX509ContextWatchError(err error) {
	w.r.s.sourceError(w.r, "invalid_response", fmt.Errorf("workload API %s: %w", w.r.addr, err))
}

// wlLogger bridges go-spiffe's client log to slog; its Errorf reports
// each failed watch attempt before the client backs off.
type wlLogger struct{ r *runner }

func (l wlLogger) Debugf(format string, args ...any) {
	l.r.s.log.Debug("identity: workload API: " + fmt.Sprintf(format, args...))
}
func (l wlLogger) Infof(format string, args ...any) { l.Debugf(format, args...) }
func (l wlLogger) Warnf(format string, args ...any) { l.Debugf(format, args...) }
func (l wlLogger) Errorf(format string, args ...any) {
	// Only a failed watch is reported here; parse errors reach the
	// watcher and a cancelled watch is reported by watchWorkloadAPI.
	if l.r.ctx.Err() != nil || !strings.HasPrefix(format, "Failed to watch") {
		l.Debugf(format, args...)
		return
	}
	l.r.s.sourceError(l.r, "unavailable", fmt.Errorf("workload API %s: %s", l.r.addr, fmt.Sprintf(format, args...)))
}

// backoffStrategy is exponential (doubling) between initial and max.
type backoffStrategy struct{ initial, max time.Duration }

func (b backoffStrategy) NewBackoff() workloadapi.Backoff { return &expBackoff{strategy: b} }

type expBackoff struct {
	strategy backoffStrategy
	next     time.Duration
}

func (e *expBackoff) Next() time.Duration {
	if e.next == 0 {
		e.next = e.strategy.initial
	}
	d := e.next
	e.next = min(e.next*2, e.strategy.max)
	return d
}

func (e *expBackoff) Reset() { e.next = 0 }

// watchFiles polls the SVID files and the static trust bundles.
func (r *runner) watchFiles() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.WatchInterval)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		if r.kind == KindFiles {
			r.pollSVIDFiles()
		}
		r.pollStaticBundles()
	}
}

// maxFileSize bounds every PEM file read.
const maxFileSize = 1 << 20

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s is larger than %d KiB; is this the right file?", path, maxFileSize>>10)
	}
	return data, nil
}

// pollSVIDFiles reads the three files; a set that changed is validated
// and applied, or rejected (logged once per content) with the previous
// SVID kept.
func (r *runner) pollSVIDFiles() {
	f := r.cfg.Files
	var parts [3][]byte
	for i, p := range []string{f.Cert, f.Key, f.Bundle} {
		data, err := readLimited(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				if !r.missing {
					r.missing = true
					r.s.sourceError(r, "missing", fmt.Errorf("waiting for %s: %w", p, errors.Unwrap(err)))
				}
				return
			}
			r.s.sourceError(r, "unreadable", err)
			return
		}
		parts[i] = data
	}
	r.missing = false
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	if sum == r.svidHash {
		return
	}
	r.svidHash = sum
	sv, bundle, err := parseSVIDFiles(parts[0], parts[1], parts[2], r.cfg.SPIFFEID, r.s.now())
	if err != nil {
		r.s.sourceError(r, "invalid", fmt.Errorf("files %s, %s, %s: %w (a file may be half-written; keeping the current SVID and retrying)", f.Cert, f.Key, f.Bundle, err))
		return
	}
	r.s.update(r, sv, x509bundle.NewSet(bundle))
}

func (r *runner) pollStaticBundles() {
	for _, tb := range r.cfg.TrustBundles {
		data, err := readLimited(tb.File)
		if err != nil {
			continue // validated at load; a missing file keeps the old bundle
		}
		sum := sha256.Sum256(data)
		if sum == r.staticHash[tb.File] {
			continue
		}
		r.staticHash[tb.File] = sum
		e, err := parseStaticBundle(tb, data, r.s.now())
		if err != nil {
			r.s.sourceError(r, "invalid_bundle", fmt.Errorf("trust bundle %s: %w (keeping the previous bundle)", tb.File, err))
			continue
		}
		r.s.staticUpdate(r, e)
	}
}
