package svid

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/time/rate"

	"github.com/ztgate/ztgate/configs"
)

// Log field names; docs/identity.md lists them word for word.
const (
	LogFieldSPIFFEID    = "spiffe_id"
	LogFieldPresented   = "presented_spiffe_id"
	LogFieldExpected    = "expected_spiffe_id"
	LogFieldSerial      = "serial"
	LogFieldExpires     = "expires"
	LogFieldSource      = "source"
	LogFieldTrustDomain = "trust_domain"
	LogFieldFile        = "file"
	LogFieldError       = "error"
	LogFieldRotations   = "rotations"
	LogFieldEndpoint    = "endpoint"
	LogFieldAuthorities = "authorities"
	LogFieldAddress     = "address"
	LogFieldReason      = "reason"
)

// Kind is where the SVID comes from. String() matches the config key.
type Kind int

// SVID source kinds.
const (
	KindNone Kind = iota
	KindWorkloadAPI
	KindFiles
)

func (k Kind) String() string {
	switch k {
	case KindWorkloadAPI:
		return "workload_api"
	case KindFiles:
		return "files"
	default:
		return "none"
	}
}

// originStatic labels bundles from identity.trust_bundles.
const originStatic = "static"

// Deps are the process-lifetime collaborators of a Source.
type Deps struct {
	// Logger receives the source's logs (default: discarded).
	Logger *slog.Logger
	// Metrics registers the ztgate_identity_* metrics (default: a
	// private registry, i.e. not exported).
	Metrics prometheus.Registerer
}

// Source is the gateway's SPIFFE identity. It implements x509svid.Source
// (the current SVID) and x509bundle.Source (trust bundles: the source's
// own and federated bundles merged with identity.trust_bundles). All
// methods are safe for concurrent use.
type Source struct {
	log     *slog.Logger
	m       *metrics
	now     func() time.Time
	limiter *rate.Limiter // handshake-failure logs

	snap atomic.Pointer[snapshot]

	applyMu sync.Mutex // serialises Apply and Close

	mu        sync.Mutex // guards the fields below
	run       *runner
	svid      *x509svid.SVID
	svidAt    time.Time
	rotations uint64
	dyn       map[spiffeid.TrustDomain]bundleEntry // from the SVID source
	fed       map[spiffeid.TrustDomain]bundleEntry // from bundle endpoints
	static    map[spiffeid.TrustDomain]bundleEntry
	lastErr   string
	warnT     *time.Timer
	expireT   *time.Timer
	changed   chan struct{} // closed on SVID/bundle change or expiry
	event     chan struct{} // closed on any state change (tests)
	closed    bool
}

var (
	_ x509svid.Source   = (*Source)(nil)
	_ x509bundle.Source = (*Source)(nil)
)

type bundleEntry struct {
	b       *x509bundle.Bundle
	origin  string // workload_api, files, federation, static
	file    string // static: the file; federation: the endpoint URL
	updated time.Time
}

// snapshot is an immutable view of the identity, published atomically.
type snapshot struct {
	enabled    bool
	kind       Kind
	addr       string // workload API address or cert file
	svid       *x509svid.SVID
	svidAt     time.Time
	rotations  uint64
	bundles    *x509bundle.Set // merged
	entries    []bundleEntry   // per trust domain and origin, sorted
	lastErr    string
	wantSVID   bool // an SVID source is configured
	pendingMsg string
}

// New starts the identity source configured in cfg.Identity. It never
// waits for the Workload API or the files: until an SVID arrives, Ready
// reports why and SPIFFE upstream handshakes fail with ErrNoSVID. It
// fails only on a config it cannot use (an unreadable trust bundle).
func New(cfg *configs.Config, deps Deps) (*Source, error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	reg := deps.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Source{
		log:     log.With("component", "identity"),
		now:     time.Now,
		limiter: rate.NewLimiter(rate.Every(200*time.Millisecond), 10),
		dyn:     map[spiffeid.TrustDomain]bundleEntry{},
		fed:     map[spiffeid.TrustDomain]bundleEntry{},
		static:  map[spiffeid.TrustDomain]bundleEntry{},
		changed: make(chan struct{}),
		event:   make(chan struct{}),
	}
	m, err := newMetrics(s, reg)
	if err != nil {
		return nil, fmt.Errorf("identity: metrics: %w", err)
	}
	s.m = m
	s.mu.Lock()
	s.publishLocked(false)
	s.mu.Unlock()
	if err := s.Apply(cfg); err != nil {
		s.m.unregister()
		return nil, err
	}
	return s, nil
}

// Apply switches to the identity section of cfg. When the section is
// unchanged the running source (its Workload API stream, its file
// watches) is kept. On error nothing changes. The current SVID stays in
// use until a changed source delivers a new one.
func (s *Source) Apply(cfg *configs.Config) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	idc := cloneIdentity(cfg.Identity)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("identity: source is closed")
	}
	if s.run != nil && reflect.DeepEqual(s.run.cfg, idc) {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()

	static, err := loadStaticBundles(idc.TrustBundles, s.now())
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	r, err := newRunner(s, idc)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}

	s.mu.Lock()
	old := s.run
	s.run = r
	s.static = static
	keep := map[spiffeid.TrustDomain]bundleEntry{}
	for _, fd := range idc.Federation {
		if td, err := spiffeid.TrustDomainFromString(fd.TrustDomain); err == nil {
			if e, ok := s.fed[td]; ok && e.file == fd.BundleEndpointURL {
				keep[td] = e // until the new runner refreshes it
			}
		}
	}
	s.fed = keep
	if !idc.HasSVIDSource() {
		s.clearSVIDLocked()
		s.dyn = map[spiffeid.TrustDomain]bundleEntry{}
	}
	s.lastErr = ""
	s.publishLocked(true)
	s.mu.Unlock()

	if old != nil {
		old.stop()
	}
	r.start()
	if idc.HasSVIDSource() {
		s.log.Info("identity: source started", LogFieldSource, r.kind.String(), LogFieldAddress, r.addr)
	}
	return nil
}

// Close stops the source. SPIFFE handshakes fail afterwards.
func (s *Source) Close() error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	r := s.run
	s.run = nil
	s.clearSVIDLocked()
	s.publishLocked(true)
	s.mu.Unlock()
	if r != nil {
		r.stop()
	}
	s.m.unregister()
	return nil
}

func cloneIdentity(c configs.Identity) configs.Identity {
	if c.Files != nil {
		f := *c.Files
		c.Files = &f
	}
	c.TrustBundles = slices.Clone(c.TrustBundles)
	return c
}

// GetX509SVID returns the current SVID, or a *NoSVIDError (errors.Is
// ErrNoSVID) when none has arrived or it has expired. Handshakes call it,
// so a rotated SVID is used by the next new connection.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	sn := s.snap.Load()
	return sn.current(s.now())
}

func (sn *snapshot) current(now time.Time) (*x509svid.SVID, error) {
	switch {
	case !sn.wantSVID:
		return nil, &NoSVIDError{Reason: "identity.workload_api or identity.files is not configured"}
	case sn.svid == nil:
		return nil, &NoSVIDError{Reason: sn.pendingMsg}
	}
	leaf := sn.svid.Certificates[0]
	if now.After(leaf.NotAfter) {
		return nil, &NoSVIDError{Reason: fmt.Sprintf("SVID %s expired at %s and no new one arrived from %s", sn.svid.ID, leaf.NotAfter.UTC().Format(time.RFC3339), sn.kind)}
	}
	return sn.svid, nil
}

// GetX509BundleForTrustDomain returns the trust bundle for td.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.snap.Load().bundles.GetX509BundleForTrustDomain(td)
}

// Bundles returns the trust bundles (the source's own and federated
// bundles merged with identity.trust_bundles) for peer authentication.
// The returned source always reads the latest bundles.
func (s *Source) Bundles() x509bundle.Source { return s }

// Ready reports nil when the gateway holds a valid SVID, or when no SVID
// source is configured; otherwise a *NoSVIDError saying why.
func (s *Source) Ready() error {
	sn := s.snap.Load()
	if !sn.wantSVID {
		return nil
	}
	_, err := sn.current(s.now())
	return err
}

// Changed returns a channel that is closed at the next change of the SVID
// or the bundles (rotation, new bundle, expiry). Upstream pools can use it
// to retire pooled connections that still present the old SVID.
func (s *Source) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// events is closed on any state change, including errors and rejected
// files (for tests).
func (s *Source) events() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.event
}

func (s *Source) clearSVIDLocked() {
	s.svid = nil
	s.stopTimersLocked()
}

func (s *Source) stopTimersLocked() {
	if s.warnT != nil {
		s.warnT.Stop()
		s.warnT = nil
	}
	if s.expireT != nil {
		s.expireT.Stop()
		s.expireT = nil
	}
}

// publishLocked builds and publishes a new snapshot. changed notifies
// Changed() waiters too.
func (s *Source) publishLocked(changed bool) {
	sn := &snapshot{
		svid:      s.svid,
		svidAt:    s.svidAt,
		rotations: s.rotations,
		lastErr:   s.lastErr,
	}
	if r := s.run; r != nil {
		sn.enabled = r.cfg.Enabled()
		sn.wantSVID = r.cfg.HasSVIDSource()
		sn.kind, sn.addr = r.kind, r.addr
	}
	sn.pendingMsg = fmt.Sprintf("no SVID has arrived yet from %s %s", sn.kind, sn.addr)
	if s.lastErr != "" {
		sn.pendingMsg += " (last error: " + s.lastErr + ")"
	}
	// Merge: the source's bundle for a trust domain, the fetched
	// federation bundle, and the static CAs. A static bundle for a
	// federated trust domain only bootstraps it: once the endpoint has
	// served a bundle, that bundle replaces it (so a CA the foreign domain
	// retired stops being trusted).
	set := x509bundle.NewSet()
	for _, m := range []map[spiffeid.TrustDomain]bundleEntry{s.dyn, s.fed, s.static} {
		for td, e := range m {
			if _, fetched := s.fed[td]; fetched && e.origin == originStatic {
				continue
			}
			sn.entries = append(sn.entries, e)
			if b, ok := set.Get(td); ok {
				b = b.Clone()
				for _, a := range e.b.X509Authorities() {
					b.AddX509Authority(a)
				}
				set.Add(b)
				continue
			}
			set.Add(e.b)
		}
	}
	slices.SortFunc(sn.entries, func(a, b bundleEntry) int {
		if c := cmpString(a.b.TrustDomain().Name(), b.b.TrustDomain().Name()); c != 0 {
			return c
		}
		return cmpString(a.origin, b.origin)
	})
	sn.bundles = set
	s.snap.Store(sn)
	close(s.event)
	s.event = make(chan struct{})
	if changed {
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// update records what a source delivered: an SVID (nil: unchanged) and
// its bundles (nil: unchanged; otherwise the complete set from that
// source).
func (s *Source) update(r *runner, sv *x509svid.SVID, bundles *x509bundle.Set) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.run != r || s.closed {
		return // a replaced source's late delivery
	}
	now := s.now()
	changed := false
	if sv != nil && (s.svid == nil || !bytes.Equal(s.svid.Certificates[0].Raw, sv.Certificates[0].Raw)) {
		rotated := s.svid != nil
		if rotated {
			s.rotations++
			s.m.rotations.Inc()
		}
		s.svid, s.svidAt = sv, now
		s.armTimersLocked(sv)
		leaf := sv.Certificates[0]
		s.log.Info("identity: SVID updated", LogFieldSPIFFEID, sv.ID.String(), LogFieldSerial, serialHex(leaf),
			LogFieldExpires, leaf.NotAfter.UTC().Format(time.RFC3339), LogFieldSource, r.kind.String(), LogFieldRotations, s.rotations)
		changed = true
	}
	if bundles != nil {
		next := map[spiffeid.TrustDomain]bundleEntry{}
		for _, b := range bundles.Bundles() {
			td := b.TrustDomain()
			if old, ok := s.dyn[td]; ok && old.b.Equal(b) {
				next[td] = old
				continue
			}
			next[td] = bundleEntry{b: b, origin: r.kind.String(), updated: now}
			changed = true
			s.log.Info("identity: trust bundle updated", LogFieldTrustDomain, td.Name(), LogFieldSource, r.kind.String(), LogFieldAuthorities, len(b.X509Authorities()))
		}
		if len(next) != len(s.dyn) {
			changed = true
		}
		s.dyn = next
	}
	s.lastErr = ""
	s.publishLocked(changed)
}

// sourceError records a failure of the running source; the current SVID
// stays in use.
func (s *Source) sourceError(r *runner, reason string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.run != r || s.closed {
		return
	}
	s.m.sourceErrors.WithLabelValues(r.kind.String(), reason).Inc()
	s.lastErr = err.Error()
	s.log.Warn("identity: source error; keeping the current SVID and retrying", LogFieldSource, r.kind.String(), LogFieldReason, reason, LogFieldError, err.Error())
	s.publishLocked(false)
}

// staticUpdate replaces one static bundle after its file changed.
func (s *Source) staticUpdate(r *runner, e bundleEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.run != r || s.closed {
		return
	}
	td := e.b.TrustDomain()
	if old, ok := s.static[td]; ok && old.b.Equal(e.b) {
		return
	}
	next := make(map[spiffeid.TrustDomain]bundleEntry, len(s.static))
	for k, v := range s.static {
		next[k] = v
	}
	next[td] = e
	s.static = next
	s.log.Info("identity: trust bundle updated", LogFieldTrustDomain, td.Name(), LogFieldSource, originStatic, LogFieldFile, e.file, LogFieldAuthorities, len(e.b.X509Authorities()))
	s.publishLocked(true)
}

// federationUpdate records a bundle fetched from a bundle endpoint.
func (s *Source) federationUpdate(r *runner, b *x509bundle.Bundle, endpoint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.run != r || s.closed {
		return
	}
	td := b.TrustDomain()
	if old, ok := s.fed[td]; ok && old.b.Equal(b) && old.file == endpoint {
		return
	}
	next := make(map[spiffeid.TrustDomain]bundleEntry, len(s.fed)+1)
	for k, v := range s.fed {
		next[k] = v
	}
	next[td] = bundleEntry{b: b, origin: originFederation, file: endpoint, updated: s.now()}
	s.fed = next
	s.log.Info("identity: trust bundle updated", LogFieldTrustDomain, td.Name(), LogFieldSource, originFederation, LogFieldEndpoint, endpoint, LogFieldAuthorities, len(b.X509Authorities()))
	s.publishLocked(true)
}

// armTimersLocked schedules the near-expiry warning (at 90% of the
// lifetime) and the expiry notice for sv.
func (s *Source) armTimersLocked(sv *x509svid.SVID) {
	s.stopTimersLocked()
	leaf := sv.Certificates[0]
	now := s.now()
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	warnAt := leaf.NotAfter.Add(-life / 10)
	s.warnT = time.AfterFunc(max(0, warnAt.Sub(now)), func() { s.nearExpiry(leaf) })
	s.expireT = time.AfterFunc(max(0, leaf.NotAfter.Sub(now))+10*time.Millisecond, func() { s.expired(leaf) })
}

func (s *Source) isCurrent(leaf *x509.Certificate) bool {
	return !s.closed && s.svid != nil && s.svid.Certificates[0] == leaf
}

func (s *Source) nearExpiry(leaf *x509.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.isCurrent(leaf) {
		return
	}
	s.log.Warn("identity: SVID is within 10% of its lifetime from expiry and no rotation has arrived; check the SPIFFE agent",
		LogFieldSPIFFEID, s.svid.ID.String(), LogFieldSerial, serialHex(leaf),
		LogFieldExpires, leaf.NotAfter.UTC().Format(time.RFC3339), LogFieldSource, s.run.kind.String(), LogFieldError, s.lastErr)
	s.publishLocked(false)
}

func (s *Source) expired(leaf *x509.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.isCurrent(leaf) {
		return
	}
	if d := leaf.NotAfter.Sub(s.now()); d >= 0 {
		s.expireT = time.AfterFunc(d+10*time.Millisecond, func() { s.expired(leaf) })
		return
	}
	s.log.Error("identity: SVID expired; SPIFFE upstream connections fail until a new SVID arrives",
		LogFieldSPIFFEID, s.svid.ID.String(), LogFieldSerial, serialHex(leaf),
		LogFieldExpires, leaf.NotAfter.UTC().Format(time.RFC3339), LogFieldSource, s.run.kind.String(), LogFieldError, s.lastErr)
	s.publishLocked(true)
}

func serialHex(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }
