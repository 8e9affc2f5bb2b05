package certs

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
)

// Source is where a listener's certificates come from. String matches
// the config spelling and the metrics' source label.
type Source int

// Certificate sources.
const (
	SourceLocalCA Source = iota
	SourceACME
	SourceFiles
)

func (s Source) String() string {
	switch s {
	case SourceACME:
		return "acme"
	case SourceFiles:
		return "files"
	default:
		return "local_ca"
	}
}

func sourceOf(t *configs.ListenerTLS) Source {
	switch t.Source() {
	case "acme":
		return SourceACME
	case "files":
		return SourceFiles
	default:
		return SourceLocalCA
	}
}

// Log field names (they match docs/certificates.md).
const (
	LogListener = "listener"
	LogName     = "name"
	LogSource   = "source"
	LogError    = "error"
)

// Tags on certificates cached from files (certmagic Certificate.Tags).
const (
	tagFiles  = "ztgate:files"
	tagNoOCSP = "ztgate:no-ocsp"
)

// Deps are the process-lifetime things a Manager uses.
type Deps struct {
	Logger *slog.Logger
	// Metrics registers the certificate metrics; nil registers none.
	Metrics prometheus.Registerer
	// WrapCert, when set, replaces each certificate before it is served
	// (the accel engine wraps the private key for offload). It is called
	// once per certificate, not per handshake.
	WrapCert func(*tls.Certificate) (*tls.Certificate, error)
	// KeyLoader loads files[].key values that are "pkcs11:" URIs.
	KeyLoader func(uri string) (crypto.Signer, error)
}

// Manager keeps the certificates of every TLS listener. One per process.
type Manager struct {
	log     *slog.Logger
	deps    Deps
	storage string
	cache   *certmagic.Cache
	fstore  *certmagic.FileStorage
	ctx     context.Context
	cancel  context.CancelFunc
	metrics *metrics

	// filesCfg and filesNoOCSP hold certificates loaded from files
	// (with and without OCSP stapling).
	filesCfg, filesNoOCSP *certmagic.Config

	// mu serialises Apply and Stop; the fields below it are theirs.
	mu       sync.Mutex
	ca       *localCA
	localCfg *certmagic.Config
	acme     map[string]*acmeSource
	managed  map[certmagic.SubjectIssuer]bool
	stopped  bool

	snap atomic.Pointer[snapshot]

	wrapMu  sync.Mutex
	wrapped sync.Map // certificate hash -> *wrappedCert

	failMu   sync.Mutex
	failures map[string]string // name -> last obtain/renew error

	// changed is signalled (without blocking) whenever a certificate is
	// obtained, cached or fails, so tests and Ready watchers can wait.
	changed chan struct{}
}

// snapshot is the immutable view one handshake works with.
type snapshot struct {
	listeners map[string]*listenerState
	order     []string
	ca        *localCA
	acme      []*acmeSource
	byName    map[string]*certmagic.Config // managed name -> its certmagic config
}

type listenerState struct {
	name       string
	source     Source
	names      []string // normalized
	minVersion uint16
	fileHashes map[string]bool
	acme       *acmeSource
}

type wrappedCert struct {
	cert  *tls.Certificate
	names []string
}

// New creates the process's certificate manager: the certmagic cache,
// file storage under cfg.Storage, and the certificates of cfg's listeners.
// Local CA certificates are issued before New returns; ACME ones are
// obtained in the background (see Ready).
func New(cfg *configs.Config, deps Deps) (*Manager, error) {
	if cfg == nil {
		return nil, errors.New("certs: nil config")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		log:      deps.Logger.With(slog.String("component", "certs")),
		deps:     deps,
		storage:  cfg.Storage,
		fstore:   &certmagic.FileStorage{Path: cfg.Storage},
		ctx:      ctx,
		cancel:   cancel,
		acme:     map[string]*acmeSource{},
		managed:  map[certmagic.SubjectIssuer]bool{},
		failures: map[string]string{},
		changed:  make(chan struct{}, 1),
	}
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: m.configForCert,
		Logger:           newZapLogger(m.log),
	})
	m.filesCfg = m.newCertmagicConfig([]certmagic.Issuer{noIssuer{}}, true)
	m.filesNoOCSP = m.newCertmagicConfig([]certmagic.Issuer{noIssuer{}}, false)
	m.metrics = newMetrics(m)
	if deps.Metrics != nil {
		if err := m.metrics.register(deps.Metrics); err != nil {
			m.Stop()
			return nil, fmt.Errorf("certs: metrics: %w", err)
		}
	}
	if err := m.Apply(cfg); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

func (m *Manager) newCertmagicConfig(issuers []certmagic.Issuer, ocsp bool) *certmagic.Config {
	return certmagic.New(m.cache, certmagic.Config{
		Storage:   m.fstore,
		Issuers:   issuers,
		KeySource: certmagic.StandardKeyGenerator{KeyType: certmagic.P256},
		// A proxy func makes certmagic use an OCSP client with a 30 s
		// timeout instead of http.DefaultClient (none): stapling a files
		// certificate runs inside Apply. It also honours HTTPS_PROXY.
		OCSP:    certmagic.OCSPConfig{DisableStapling: !ocsp, HTTPProxy: http.ProxyFromEnvironment},
		OnEvent: m.onEvent,
		Logger:  newZapLogger(m.log),
	})
}

// configForCert tells certmagic's maintenance which config manages a
// cached certificate.
func (m *Manager) configForCert(c certmagic.Certificate) (*certmagic.Config, error) {
	if c.HasTag(tagFiles) {
		if c.HasTag(tagNoOCSP) {
			return m.filesNoOCSP, nil
		}
		return m.filesCfg, nil
	}
	s := m.snap.Load()
	if s == nil {
		return nil, errors.New("certs: not configured yet")
	}
	for _, n := range c.Names {
		if cfg := s.byName[n]; cfg != nil {
			return cfg, nil
		}
	}
	return nil, fmt.Errorf("certs: no source manages %v any more", c.Names)
}

// Apply takes a new config (reload): it manages names that were added,
// re-reads every certificate file, and stops managing removed names. A
// bad file, an unreadable CA root or a name claimed by two sources
// returns an error and changes nothing: the old certificates keep
// serving.
func (m *Manager) Apply(cfg *configs.Config) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return errors.New("certs: manager is stopped")
	}
	file := cfg.File
	if file == "" {
		file = "config"
	}
	if cfg.Storage != m.storage {
		return fmt.Errorf("%s: storage: changing %q to %q needs a restart", file, m.storage, cfg.Storage)
	}
	plan, err := m.plan(cfg, false)
	if err != nil {
		return prefixErrors(file, err)
	}

	// Local CA: created once, then its leaves are issued synchronously
	// (no network), so a local_ca listener is ready when Apply returns.
	if plan.needCA && m.ca == nil {
		ca, err := loadOrCreateCA(m.storage, cfg.TLS.LocalCA.Name)
		if err != nil {
			return err
		}
		m.ca = ca
		m.localCfg = m.newCertmagicConfig([]certmagic.Issuer{ca}, false)
		m.log.Info("local CA ready", slog.String("root", ca.rootPath))
	}
	if m.ca != nil {
		m.ca.lifetime.Store(int64(cfg.TLS.LocalCA.LeafLifetime))
	}
	var newLocal []string
	for _, n := range plan.localNames {
		if !m.managed[certmagic.SubjectIssuer{Subject: n, IssuerKey: m.ca.IssuerKey()}] {
			newLocal = append(newLocal, n)
		}
	}
	for _, n := range newLocal {
		if err := m.manageLocal(n); err != nil {
			m.unmanage(newLocal, m.ca.IssuerKey())
			return fmt.Errorf("local CA: %s: %w", n, err)
		}
	}

	// Files: cache the new certificates (a no-op for unchanged ones).
	var cached []string
	undoFiles := func() {
		// Forget what this Apply cached that the live snapshot does not use.
		var drop []string
		cur := m.snap.Load()
		for _, h := range cached {
			if cur == nil || !cur.usesFileHash(h) {
				drop = append(drop, h)
			}
		}
		m.cache.Remove(drop)
	}
	for _, ls := range plan.listeners {
		ls.fileHashes = map[string]bool{}
		for _, fc := range plan.files[ls.name] {
			tags := []string{tagFiles}
			if !plan.ocsp[ls.name] {
				tags = append(tags, tagNoOCSP)
			}
			cmcfg := m.filesCfg
			if !plan.ocsp[ls.name] {
				cmcfg = m.filesNoOCSP
			}
			m.dropIfTagsDiffer(fc.cert, tags)
			hash, err := cmcfg.CacheUnmanagedTLSCertificate(m.ctx, fc.cert, tags)
			if err != nil {
				undoFiles()
				if len(newLocal) > 0 {
					m.unmanage(newLocal, m.ca.IssuerKey())
				}
				return fmt.Errorf("%s: %s: %w", file, fc.key, err)
			}
			cached = append(cached, hash)
			ls.fileHashes[hash] = true
		}
		if ls.source == SourceFiles && len(ls.names) == 0 {
			ls.names = namesOfFiles(plan.files[ls.name])
		}
	}

	// Publish, then start ACME work (which reads the snapshot).
	s := &snapshot{listeners: map[string]*listenerState{}, ca: m.ca, byName: map[string]*certmagic.Config{}}
	for _, ls := range plan.listeners {
		s.listeners[ls.name] = ls
		s.order = append(s.order, ls.name)
	}
	slices.Sort(s.order)
	for _, n := range plan.localNames {
		s.byName[n] = m.localCfg
	}
	wanted := map[certmagic.SubjectIssuer]bool{}
	if m.ca != nil {
		for _, n := range plan.localNames {
			wanted[certmagic.SubjectIssuer{Subject: n, IssuerKey: m.ca.IssuerKey()}] = true
		}
	}
	for _, a := range plan.acme {
		s.acme = append(s.acme, a)
		for n := range a.want {
			s.byName[n] = a.cfg
			wanted[certmagic.SubjectIssuer{Subject: n, IssuerKey: a.issuer.IssuerKey()}] = true
		}
	}
	old := m.snap.Swap(s)

	// Stop managing what is gone before managing anything new: certmagic
	// skips a name that already has a managed certificate (from any
	// source), which would leave a name moved between sources without one.
	var gone []certmagic.SubjectIssuer
	for si := range m.managed {
		if !wanted[si] {
			gone = append(gone, si)
		}
	}
	if len(gone) > 0 {
		m.cache.RemoveManaged(gone)
	}
	m.managed = wanted

	for _, a := range plan.acme {
		for n := range a.want {
			if a.names[n] != nil {
				continue
			}
			// Async: a slow or unreachable CA must not hold up a reload;
			// certmagic retries with backoff, Ready reports progress.
			// Each name has its own context, so that removing the name
			// (or its acme block) ends its retries.
			ctx, cancel := context.WithCancel(m.ctx)
			a.names[n] = cancel
			if err := a.cfg.ManageAsync(ctx, []string{n}); err != nil {
				m.log.Error("acme: manage", slog.String(LogName, n), slog.String(LogError, err.Error()))
			}
		}
		for n, cancel := range a.names {
			if !a.want[n] {
				cancel()
				delete(a.names, n)
			}
		}
	}
	for k, a := range m.acme {
		if plan.acmeByKey[k] == nil {
			for _, cancel := range a.names {
				cancel()
			}
		}
	}
	m.acme = plan.acmeByKey

	// Drop file certificates no listener uses any more.
	if old != nil {
		var drop []string
		for _, ols := range old.listeners {
			for h := range ols.fileHashes {
				if !s.usesFileHash(h) {
					drop = append(drop, h)
				}
			}
		}
		if len(drop) > 0 {
			m.cache.Remove(drop)
		}
	}
	m.pruneWrapped()
	m.pruneFailures(s)
	return nil
}

func (s *snapshot) usesFileHash(h string) bool {
	for _, ls := range s.listeners {
		if ls.fileHashes[h] {
			return true
		}
	}
	return false
}

// plan is what Apply will do, computed without side effects.
type plan struct {
	listeners  []*listenerState
	files      map[string][]fileCert
	ocsp       map[string]bool
	needCA     bool
	localNames []string
	acme       []*acmeSource
	acmeByKey  map[string]*acmeSource
}

// plan checks cfg and works out what Apply will do. With dry set (Check)
// it creates nothing: ACME sources are only checked, and HSM keys are
// skipped when no KeyLoader is given.
func (m *Manager) plan(cfg *configs.Config, dry bool) (*plan, error) {
	p := &plan{files: map[string][]fileCert{}, ocsp: map[string]bool{}, acmeByKey: map[string]*acmeSource{}}
	var errs []error
	owner := map[string]string{} // name -> "listeners[i] (source key)"
	ownerSrc := map[string]string{}
	local := map[string]bool{}
	now := time.Now()
	for i := range cfg.Listeners {
		l := &cfg.Listeners[i]
		if l.TLS == nil {
			continue
		}
		key := fmt.Sprintf("listeners[%d].tls", i)
		ls := &listenerState{name: l.Name, source: sourceOf(l.TLS), minVersion: tls.VersionTLS12}
		if l.TLS.MinVersion == "1.3" {
			ls.minVersion = tls.VersionTLS13
		}
		for _, n := range l.TLS.Names {
			ls.names = append(ls.names, normalizeName(n))
		}
		p.ocsp[l.Name] = l.TLS.OCSPStapling == nil || *l.TLS.OCSPStapling
		srcKey := ""
		switch ls.source {
		case SourceFiles:
			for j, f := range l.TLS.Files {
				fk := fmt.Sprintf("%s.files[%d]", key, j)
				loader := m.deps.KeyLoader
				if dry && loader == nil && strings.HasPrefix(f.Key, pkcs11Prefix) {
					loader = publicKeyOf(f.Cert) // cannot open the HSM here
				}
				c, err := loadFileCert(fk, f.Cert, f.Key, loader, now)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				p.files[l.Name] = append(p.files[l.Name], fileCert{key: fk, cert: c})
			}
		case SourceLocalCA:
			p.needCA = true
			srcKey = "local_ca"
			for _, n := range ls.names {
				if !local[n] {
					local[n] = true
					p.localNames = append(p.localNames, n)
				}
			}
		case SourceACME:
			ak, err := acmeKey(l.TLS)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.acme.ca_root: %w", key, err))
				continue
			}
			srcKey = "acme " + l.TLS.ACME.Directory
			a := p.acmeByKey[ak]
			if a == nil {
				a = m.acme[ak]
				if a == nil {
					if dry {
						a, err = &acmeSource{}, checkCARoot(l.TLS.ACME.CARoot)
					} else {
						a, err = m.newACMESource(ak, l.TLS)
					}
					if err != nil {
						errs = append(errs, fmt.Errorf("%s.acme: %w", key, err))
						continue
					}
				}
				a.want = map[string]bool{}
				p.acmeByKey[ak] = a
				p.acme = append(p.acme, a)
			}
			for j, n := range ls.names {
				if strings.HasPrefix(n, "*.") {
					errs = append(errs, fmt.Errorf("%s.names[%d]: %q: ACME issues wildcard certificates only with the DNS-01 challenge, which ztgate does not support (use files or the local CA for wildcards)", key, j, n))
					continue
				}
				a.want[n] = true
			}
			ls.acme = a
			srcKey = ak
		}
		if srcKey != "" {
			for j, n := range ls.names {
				if prev, ok := owner[n]; ok && ownerSrc[n] != srcKey {
					errs = append(errs, fmt.Errorf("%s.names[%d]: %q is also served by %s with another certificate source; one name can have only one managed source (use the same tls settings on both listeners)", key, j, n, prev))
					continue
				}
				owner[n] = fmt.Sprintf("listeners[%d]", i)
				ownerSrc[n] = srcKey
			}
		}
		p.listeners = append(p.listeners, ls)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// Check is what Apply would refuse, without creating or starting
// anything (for `ztgate validate`): certificate files are read and
// checked, ACME ca_root files parsed, names checked for one source.
// "pkcs11:" keys are checked only when deps.KeyLoader is set.
func Check(cfg *configs.Config, deps Deps) error {
	m := &Manager{deps: deps, acme: map[string]*acmeSource{}}
	if _, err := m.plan(cfg, true); err != nil {
		file := cfg.File
		if file == "" {
			file = "config"
		}
		return prefixErrors(file, err)
	}
	return nil
}

// unmanage removes managed certificates of one issuer from the cache.
func (m *Manager) unmanage(names []string, issuerKey string) {
	si := make([]certmagic.SubjectIssuer, len(names))
	for i, n := range names {
		si[i] = certmagic.SubjectIssuer{Subject: n, IssuerKey: issuerKey}
	}
	m.cache.RemoveManaged(si)
}

// dropIfTagsDiffer removes a cached file certificate whose tags (OCSP
// on or off) changed, so that caching it again applies the new tags.
func (m *Manager) dropIfTagsDiffer(c tls.Certificate, tags []string) {
	if c.Leaf == nil {
		return
	}
	names := append(append([]string(nil), c.Leaf.DNSNames...), ipStrings(c.Leaf)...)
	for _, n := range names {
		for _, cc := range m.cache.AllMatchingCertificates(n) {
			if !slices.Equal(cc.Certificate.Certificate[0], c.Certificate[0]) {
				continue
			}
			if !slices.Equal(cc.Tags, tags) {
				m.cache.Remove([]string{cc.Hash()})
			}
			return
		}
	}
}

func namesOfFiles(fcs []fileCert) []string {
	seen := map[string]bool{}
	var out []string
	for _, fc := range fcs {
		for _, n := range append(append([]string(nil), fc.cert.Leaf.DNSNames...), ipStrings(fc.cert.Leaf)...) {
			n = normalizeName(n)
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}

func prefixErrors(file string, err error) error {
	var out []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, fmt.Errorf("%s: %w", file, e))
		}
		return errors.Join(out...)
	}
	return fmt.Errorf("%s: %w", file, err)
}

// onEvent receives certmagic's events: failures are counted and kept
// for Ready; any change wakes waiters.
func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	switch event {
	case "cert_failed":
		name, _ := data["identifier"].(string)
		renewal, _ := data["renewal"].(bool)
		src := m.sourceOfIssuers(data["issuers"])
		msg := "unknown error"
		if e, ok := data["error"].(error); ok {
			msg = e.Error()
		}
		if renewal {
			m.metrics.renewFailures.WithLabelValues(src.String()).Inc()
		} else {
			m.metrics.obtainFailures.WithLabelValues(src.String()).Inc()
		}
		m.failMu.Lock()
		m.failures[name] = msg
		m.failMu.Unlock()
		m.log.Warn("certificate: obtain or renew failed", slog.String(LogName, name), slog.String(LogSource, src.String()), slog.Bool("renewal", renewal), slog.String(LogError, msg))
	case "cert_obtained":
		name, _ := data["identifier"].(string)
		m.failMu.Lock()
		delete(m.failures, name)
		m.failMu.Unlock()
	case "cached_managed_cert", "cached_unmanaged_cert":
	default:
		return nil
	}
	select {
	case m.changed <- struct{}{}:
	default:
	}
	return nil
}

// sourceOfIssuers maps the issuer keys of an event to a source. It must
// not take m.mu: events fire inside Apply.
func (m *Manager) sourceOfIssuers(v any) Source {
	keys, _ := v.([]string)
	for _, k := range keys {
		if strings.HasPrefix(k, localCAIssuerPrefix) {
			return SourceLocalCA
		}
	}
	return SourceACME
}

// manageLocal loads name's local CA certificate from storage, or issues
// one, renewing a stored one that is due, and caches it as managed (so
// certmagic's maintenance renews it). Unlike certmagic's Manage, it does
// not skip a name that another source's certificate still holds.
func (m *Manager) manageLocal(name string) error {
	cfg := m.localCfg
	c, err := cfg.CacheManagedCertificate(m.ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		if err := cfg.ObtainCertSync(m.ctx, name); err != nil {
			return err
		}
		_, err = cfg.CacheManagedCertificate(m.ctx, name)
		return err
	}
	if err != nil {
		return err
	}
	if c.NeedsRenewal(cfg) {
		if err := cfg.RenewCertSync(m.ctx, name, false); err != nil {
			return err
		}
		if _, err := cfg.CacheManagedCertificate(m.ctx, name); err != nil {
			return err
		}
		m.cache.Remove([]string{c.Hash()})
	}
	return nil
}

func (m *Manager) pruneFailures(s *snapshot) {
	m.failMu.Lock()
	defer m.failMu.Unlock()
	for n := range m.failures {
		if s.byName[n] == nil {
			delete(m.failures, n)
		}
	}
}

// Ready returns nil once every TLS listener has a certificate for each of
// its names; otherwise an error listing what is missing and why.
func (m *Manager) Ready() error {
	s := m.snap.Load()
	if s == nil {
		return errors.New("certs: not configured")
	}
	m.failMu.Lock()
	failures := maps.Clone(m.failures)
	m.failMu.Unlock()
	var missing []string
	for _, ln := range s.order {
		ls := s.listeners[ln]
		if ls.source == SourceFiles && len(ls.fileHashes) == 0 {
			missing = append(missing, fmt.Sprintf("listener %q: no certificate files loaded", ln))
			continue
		}
		for _, n := range ls.names {
			if len(m.candidates(s, ls, n)) > 0 {
				continue
			}
			why := "not obtained yet"
			switch {
			case failures[n] != "":
				why = failures[n]
			case ls.source == SourceFiles:
				why = "no configured certificate file covers it"
			}
			missing = append(missing, fmt.Sprintf("listener %q: %q (%s): %s", ln, n, ls.source, why))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("certs: missing certificates: %s", strings.Join(missing, "; "))
	}
	return nil
}

// Changed returns a channel that receives (without blocking, coalesced)
// whenever a certificate was obtained, loaded or failed: a cue to check
// Ready again.
func (m *Manager) Changed() <-chan struct{} { return m.changed }

// LocalCARoot returns the path of the local CA's root certificate (PEM),
// for clients to trust: curl --cacert "$(that path)". The file exists once
// a listener uses the local CA.
func (m *Manager) LocalCARoot() string { return caRootPath(m.storage) }

// Stop ends certificate maintenance and any ACME work in progress.
func (m *Manager) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	m.stopped = true
	m.cancel()
	m.cache.Stop()
}

// noIssuer is the issuer of certificates loaded from files: ztgate never
// renews them, the operator replaces the files.
type noIssuer struct{}

func (noIssuer) IssuerKey() string { return "ztgate-files" }
func (noIssuer) Issue(context.Context, *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	return nil, errors.New("certificates from files are renewed by replacing the files and reloading")
}
