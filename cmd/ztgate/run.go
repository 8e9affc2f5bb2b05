package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ztgate/ztgate/cmd/ztgate/internal/version"
	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/gateway"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// Subscribe before anything starts: a SIGHUP (systemctl reload)
	// during a slow start is queued and applied once serving, instead of
	// killing the process with the default action.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	path := resolveConfig(*cfgPath)
	cfg, err := loadConfig(path)
	if err != nil {
		printErrors(stderr, err)
		fmt.Fprintf(stderr, "%s: refused; fix the problems above and start again\n", displayName(path))
		return 1
	}
	a, err := newApp(path, cfg, stdout)
	if err != nil {
		printErrors(stderr, err)
		return 1
	}
	if err := a.start(cfg); err != nil {
		a.log.Error("start failed", "errors", errorStrings(err))
		a.stop(context.Background())
		return 1
	}
	return a.wait(sigs)
}

// app wires the components together and owns the process-wide state:
// the logger, the metrics registry, and every registry that must survive
// reloads.
type app struct {
	path   string
	log    *slog.Logger
	level  *slog.LevelVar
	logOut io.Closer
	// abuf batches access-log lines (up to 4 KiB, at most 100 ms late),
	// as Envoy's file access log does; stop flushes it.
	abuf    *gateway.LineBuffer
	alog    *slog.Logger
	reg     *prometheus.Registry
	gm      *gateway.Metrics
	gw      *gateway.Server
	admin   *gateway.Admin
	parts   *components
	mu      sync.Mutex // serialises reloads
	current *configs.Config
}

func newApp(path string, cfg *configs.Config, stdout io.Writer) (*app, error) {
	a := &app{path: path, level: new(slog.LevelVar), reg: prometheus.NewRegistry()}
	if err := a.setupLog(cfg, stdout); err != nil {
		return nil, err
	}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ztgate_build_info", Help: "Build information.", ConstLabels: prometheus.Labels{"version": version.Version},
	}, func() float64 { return 1 }))
	a.gm = gateway.NewMetrics(a.reg)
	parts, err := newComponents(cfg, a.log, a.reg)
	if err != nil {
		return nil, err
	}
	a.parts = parts
	a.gw, err = gateway.New(gateway.Deps{
		Logger:     a.log,
		AccessLog:  a.alog,
		Metrics:    a.gm,
		Certs:      parts.certs,
		Extensions: parts.extensions,
	})
	if err != nil {
		return nil, err
	}
	a.admin = gateway.NewAdmin(a.log, a.reg, a.config)
	a.admin.AddReadyCheck("gateway", func() error {
		if rt := a.gw.Runtime(); rt == nil {
			return fmt.Errorf("not serving")
		} else {
			return rt.Ready()
		}
	})
	parts.registerAdmin(a.admin)
	return a, nil
}

func (a *app) setupLog(cfg *configs.Config, stdout io.Writer) error {
	var w io.Writer = stdout
	switch cfg.Log.Output {
	case "stdout":
	case "stderr":
		w = os.Stderr
	default:
		f, err := os.OpenFile(cfg.Log.Output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return fmt.Errorf("%s: log.output: %w", displayName(a.path), err)
		}
		w, a.logOut = f, f
	}
	a.setLevel(cfg)
	opts := &slog.HandlerOptions{Level: a.level}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if cfg.Log.Format == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	a.log = slog.New(h)
	a.abuf = gateway.NewLineBuffer(w, 4096, 100*time.Millisecond)
	var ah slog.Handler = slog.NewJSONHandler(a.abuf, opts)
	if cfg.Log.Format == "text" {
		ah = slog.NewTextHandler(a.abuf, opts)
	}
	a.alog = slog.New(ah)
	return nil
}

func (a *app) setLevel(cfg *configs.Config) {
	var l slog.Level
	l.UnmarshalText([]byte(cfg.Log.Level))
	a.level.Set(l)
}

func (a *app) config() *configs.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.current
}

// start applies the first config: the same path as a reload.
func (a *app) start(cfg *configs.Config) error {
	a.log.Info("starting", "version", version.String(), "config", displayName(a.path))
	if err := a.apply(cfg); err != nil {
		return err
	}
	return nil
}

// apply publishes cfg to every component, in dependency order: the
// identity source and certificates (the gateway's TLS needs them), the
// gateway, then the DNS guard and egress. Each component compiles before
// it swaps, so a failure leaves it on the old config. reload runs the
// side-effect-free compile first, so what can still fail here is mostly
// a socket that cannot be bound; components applied before such a
// failure keep the new config, and the failure is logged and counted.
func (a *app) apply(cfg *configs.Config) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.parts.prepare(cfg); err != nil {
		return err
	}
	if err := a.gw.Apply(cfg); err != nil {
		return err
	}
	if err := a.parts.apply(cfg); err != nil {
		return err
	}
	if err := a.admin.Start(cfg.Admin.Address); err != nil {
		return fmt.Errorf("%s: admin.address: %w", displayName(a.path), err)
	}
	a.admin.SetPprof(cfg.Admin.Pprof)
	a.setLevel(cfg)
	a.current = cfg
	sum := sha256.Sum256([]byte(fmt.Sprintf("%+v", *cfg)))
	a.gm.SetConfigInfo(displayName(a.path), hex.EncodeToString(sum[:8]))
	return nil
}

// reload re-reads the file: read → validate → compile → publish. On any
// error the old config keeps serving, and the failure is logged (with
// file and key) and counted.
func (a *app) reload() error {
	start := time.Now()
	cfg, err := loadConfig(a.path)
	if err == nil {
		// Compile everything once with no side effects (what `ztgate
		// validate` runs), so a bad certificate, TLS file, policy or
		// Rego module is refused before any component changes. What
		// is left for apply to fail on is mostly a busy port.
		err = compileOnly(cfg)
	}
	if err == nil {
		err = a.apply(cfg)
	}
	if err != nil {
		a.gm.ReloadResult(false)
		a.log.Error("config reload refused; the previous config keeps serving",
			"config", displayName(a.path), "errors", errorStrings(err))
		return err
	}
	a.gm.ReloadResult(true)
	a.log.Info("config reloaded", "config", displayName(a.path), "duration_ms", time.Since(start).Milliseconds(),
		"listeners", len(cfg.Listeners), "routes", len(cfg.Routes))
	return nil
}

// wait serves until SIGTERM/SIGINT, reloading on SIGHUP.
func (a *app) wait(sigs chan os.Signal) int {
	a.gm.ConfigLoaded()
	a.log.Info("ready to serve", "config", displayName(a.path), "pid", os.Getpid())
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			a.reload()
			continue
		}
		timeout := a.config().ShutdownTimeout
		a.log.Info("draining", "signal", sig.String(), "deadline", timeout.String())
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		go func() {
			// A second signal stops at once.
			if s := <-sigs; s != syscall.SIGHUP {
				a.log.Warn("second signal: stopping now", "signal", s.String())
				cancel()
			}
		}()
		err := a.stop(ctx)
		cancel()
		if err != nil {
			a.log.Warn("stopped with connections cut at the deadline", "error", err)
			return 1
		}
		a.log.Info("stopped")
		return 0
	}
	return 0
}

func (a *app) stop(ctx context.Context) error {
	err := a.gw.Shutdown(ctx)
	a.parts.shutdown(ctx)
	a.admin.Shutdown(ctx)
	if a.abuf != nil {
		a.abuf.Close() // the last access lines, before the file closes
	}
	if a.logOut != nil {
		a.logOut.Close()
	}
	return err
}

func redactedJSON(cfg *configs.Config) ([]byte, error) { return gateway.RedactedJSON(cfg) }
