package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/ztgate/ztgate/accel"
	"github.com/ztgate/ztgate/authn/jwt"
	"github.com/ztgate/ztgate/authz"
	"github.com/ztgate/ztgate/authz/extauthz"
	"github.com/ztgate/ztgate/authz/rego"
	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/gateway"
)

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ", ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// cmdPolicy is `ztgate policy check`: evaluate one request against the
// compiled config, offline. Exit 0 allow, 1 deny, 2 bad usage or config.
func cmdPolicy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, "usage: ztgate policy check -c FILE [--method M] [--path P] [--host H] [--header 'Name: value']... [--source IP] [--remote IP] [--peer spiffe://...] [--route NAME]")
		return 2
	}
	fs := flag.NewFlagSet("policy check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	var req authz.CheckRequest
	var headers multiFlag
	fs.StringVar(&req.Method, "method", "GET", "HTTP method")
	fs.StringVar(&req.Path, "path", "/", "path, optionally with ?query")
	fs.StringVar(&req.Host, "host", "", "Host header (default: the route's first host)")
	fs.Var(&headers, "header", "request header 'Name: value' (repeatable; as curl -H)")
	fs.Var(&headers, "H", "alias of --header")
	fs.StringVar(&req.Source, "source", "", "direct peer IP (default 127.0.0.1)")
	fs.StringVar(&req.Remote, "remote", "", "client IP behind trusted proxies")
	fs.StringVar(&req.Peer, "peer", "", "client certificate SPIFFE ID, e.g. spiffe://example.org/ns/default/sa/web")
	fs.IntVar(&req.Port, "port", 0, "destination port (default: the listener's)")
	fs.StringVar(&req.SNI, "sni", "", "TLS server name")
	fs.StringVar(&req.Listener, "listener", "", "force the listener")
	fs.StringVar(&req.Route, "route", "", "force the route (default: chosen as the gateway does)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	req.Headers = headers
	// Decide on the path the gateway would route and authorize.
	if u, err := url.Parse(req.Path); err == nil {
		clean, err := gateway.NormalizePath(u.Path, u.RawPath)
		if err != nil {
			fmt.Fprintf(stdout, "decision: DENY (status 400): the gateway refuses this path (%v)\n", err)
			return 1
		}
		u.Path, u.RawPath = clean, ""
		req.Path = u.RequestURI()
	}
	cfg, err := loadConfig(resolveConfig(*cfgPath))
	if err != nil {
		printErrors(stderr, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	keys := jwt.NewKeyCache(jwt.Deps{Logger: log})
	defer keys.Close()
	j, err := jwt.New(cfg, jwt.Deps{Logger: log, Keys: keys})
	if err != nil {
		printErrors(stderr, err)
		return 2
	}
	defer j.Close()
	// Remote JWKS are fetched as the gateway would; wait for the first
	// attempt so a valid token is not refused for want of keys.
	keys.Wait(ctx)
	verify := func(ctx context.Context, route string, h map[string][]string) (*authz.JWTIdentity, error) {
		u, _ := url.Parse(req.Path)
		if u == nil {
			u = &url.URL{Path: "/"}
		}
		hr := &http.Request{Method: req.Method, URL: u, Header: http.Header{}, Host: req.Host}
		for k, vs := range h {
			for _, v := range vs {
				hr.Header.Add(k, v)
			}
		}
		id, err := j.Authenticate(hr.WithContext(ctx), route)
		if err != nil || id == nil {
			return nil, err
		}
		return &authz.JWTIdentity{Principal: id.RequestPrincipal, Claims: id.Claims, Audiences: id.Audiences, Presenter: id.Presenter}, nil
	}
	allowed, err := authz.Check(ctx, cfg, authz.Deps{Logger: log, Rego: rego.Compiler, HTTP: extauthz.Factory}, req, verify, stdout)
	if err != nil {
		printErrors(stderr, err)
		return 2
	}
	if !allowed {
		return 1
	}
	return 0
}

// cmdAccel is `ztgate accel bench`: sign operations/s per provider and
// key type, and TLS 1.3 handshakes/s through a loopback listener.
func cmdAccel(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "bench" {
		fmt.Fprintln(stderr, "usage: ztgate accel bench [-c FILE] [--providers go,openssl,pkcs11] [--keys rsa2048,rsa3072,ecdsa_p256] [--sign-duration 1s] [--handshake-duration 2s]")
		return 2
	}
	fs := flag.NewFlagSet("accel bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "config file whose accel: section configures the providers (optional)")
	providers := fs.String("providers", "", "providers to measure (default: go, openssl)")
	keys := fs.String("keys", "", "key types (default: rsa2048, rsa3072, ecdsa_p256)")
	var o accel.BenchOptions
	fs.DurationVar(&o.SignDuration, "sign-duration", time.Second, "time per sign measurement")
	fs.DurationVar(&o.HandshakeDuration, "handshake-duration", 2*time.Second, "time per handshake measurement (negative: skip)")
	fs.IntVar(&o.Concurrency, "concurrency", 0, "handshake clients (default 4 per core)")
	fs.BoolVar(&o.NoResumption, "no-resumption", false, "skip the resumed-handshake row")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	o.Providers, o.KeyTypes = splitCSV(*providers), splitCSV(*keys)
	if *cfgPath != "" {
		cfg, err := configs.Load(*cfgPath)
		if err != nil {
			printErrors(stderr, err)
			return 2
		}
		o.OpenSSL = cfg.Accel.OpenSSL
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := accel.Bench(ctx, stdout, o); err != nil {
		if errors.Is(err, context.Canceled) {
			return 130
		}
		fmt.Fprintln(stderr, "ztgate accel bench:", err)
		return 1
	}
	return 0
}
