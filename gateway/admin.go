package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/ztgate/ztgate/configs"
)

// ReadyCheck reports nil when its part of the gateway is ready.
type ReadyCheck func() error

// Admin is the separate admin listener: /healthz, /readyz, /metrics,
// /config and the endpoints other components add (/identity, ...).
// It is meant for loopback or a management network only.
type Admin struct {
	log    *slog.Logger
	gather prometheus.Gatherer
	mu     sync.Mutex
	mux    *http.ServeMux
	checks map[string]ReadyCheck
	config func() *configs.Config
	srv    *http.Server
	ln     net.Listener
	addr   string
	pprof  bool
}

// NewAdmin builds the admin handler. config returns the effective config
// for /config; gather serves /metrics.
func NewAdmin(log *slog.Logger, gather prometheus.Gatherer, config func() *configs.Config) *Admin {
	a := &Admin{log: log.With("component", "admin"), gather: gather, mux: http.NewServeMux(),
		checks: map[string]ReadyCheck{}, config: config}
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	a.mux.HandleFunc("GET /readyz", a.readyz)
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(gather, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}))
	a.mux.HandleFunc("GET /config", a.configz)
	a.mux.HandleFunc("GET /{$}", a.index)
	return a
}

// Handle adds an endpoint (e.g. "GET /identity").
func (a *Admin) Handle(pattern string, h http.Handler) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mux.Handle(pattern, h)
}

// AddReadyCheck adds a named readiness condition to /readyz.
func (a *Admin) AddReadyCheck(name string, c ReadyCheck) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checks[name] = c
}

// Ready runs every check and returns the failures by name.
func (a *Admin) Ready() map[string]string {
	a.mu.Lock()
	checks := make(map[string]ReadyCheck, len(a.checks))
	for k, v := range a.checks {
		checks[k] = v
	}
	a.mu.Unlock()
	out := map[string]string{}
	for name, c := range checks {
		if err := c(); err != nil {
			out[name] = err.Error()
		}
	}
	return out
}

func (a *Admin) readyz(w http.ResponseWriter, r *http.Request) {
	failed := a.Ready()
	w.Header().Set("Content-Type", "application/json")
	if len(failed) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(struct {
		Ready    bool              `json:"ready"`
		NotReady map[string]string `json:"not_ready,omitempty"`
	}{len(failed) == 0, failed})
}

func (a *Admin) configz(w http.ResponseWriter, r *http.Request) {
	cfg := a.config()
	if cfg == nil {
		http.Error(w, "no config loaded", http.StatusServiceUnavailable)
		return
	}
	out, err := RedactedJSON(cfg)
	if err != nil {
		http.Error(w, "cannot render config", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

func (a *Admin) index(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ztgate admin: /healthz /readyz /metrics /config and component endpoints\n"))
}

// secretKeys are JSON keys whose values /config and `validate --print`
// never show.
var secretKeys = []string{"pin", "password", "passphrase", "secret", "token", "private_key", "key_pem", "credentials"}

// RedactedJSON renders cfg as indented JSON with secret values replaced.
func RedactedJSON(cfg *configs.Config) ([]byte, error) {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	redact(v)
	return json.MarshalIndent(v, "", "  ")
}

func redact(v any) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if isSecretKey(k) {
				if s, ok := x[k].(string); ok && s != "" {
					x[k] = "<redacted>"
				}
				continue
			}
			redact(x[k])
		}
	case []any:
		for _, it := range x {
			redact(it)
		}
	}
}

func isSecretKey(k string) bool {
	k = strings.ToLower(k)
	for _, s := range secretKeys {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// Start listens on addr ("off" disables the admin server). A changed
// address on reload opens the new socket before closing the old.
func (a *Admin) Start(addr string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if addr == a.addr {
		return nil
	}
	var ln net.Listener
	if addr != "off" {
		var err error
		ln, err = net.Listen("tcp", addr)
		if err != nil {
			return err
		}
	}
	old := a.srv
	a.srv, a.ln, a.addr = nil, ln, addr
	if ln != nil {
		a.srv = &http.Server{
			Handler:           http.HandlerFunc(a.serve),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    16 << 10,
		}
		srv := a.srv
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("admin server stopped", "error", err)
			}
		}()
		a.log.Info("admin listening", "address", ln.Addr().String())
	}
	if old != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		old.Shutdown(ctx)
	}
	return nil
}

func (a *Admin) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	mux, pprofOn := a.mux, a.pprof
	a.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/debug/pprof/") {
		if !pprofOn {
			http.Error(w, "pprof is off (admin.pprof: true enables it)", http.StatusNotFound)
			return
		}
		switch strings.TrimPrefix(r.URL.Path, "/debug/pprof/") {
		case "profile":
			pprof.Profile(w, r)
		case "trace":
			pprof.Trace(w, r)
		case "symbol":
			pprof.Symbol(w, r)
		case "cmdline":
			pprof.Cmdline(w, r)
		default:
			pprof.Index(w, r)
		}
		return
	}
	mux.ServeHTTP(w, r)
}

// SetPprof turns the /debug/pprof/ endpoints on or off (admin.pprof).
func (a *Admin) SetPprof(on bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pprof = on
}

// Addr returns the bound admin address, or nil when off.
func (a *Admin) Addr() net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ln == nil {
		return nil
	}
	return a.ln.Addr()
}

// Shutdown stops the admin server.
func (a *Admin) Shutdown(ctx context.Context) error {
	a.mu.Lock()
	srv := a.srv
	a.srv, a.ln, a.addr = nil, nil, ""
	a.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}
