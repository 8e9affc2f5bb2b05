// Command ztgate is the zero-trust edge gateway.
//
//	ztgate run      [-c FILE]             serve; SIGHUP reloads, SIGTERM drains
//	ztgate validate [-c FILE] [--print]   compile the config without starting; exit 0/1
//	ztgate version
//	ztgate policy check -c FILE ...       evaluate a request offline
//	ztgate accel bench                    private-key offload benchmark
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ztgate/ztgate/authz/istio"
	"github.com/ztgate/ztgate/cmd/ztgate/internal/version"
	"github.com/ztgate/ztgate/configs"
)

// DefaultConfig is where packages install the config.
const DefaultConfig = "/etc/ztgate/ztgate.yaml"

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "ztgate", version.String())
		return 0
	case "policy":
		return cmdPolicy(args[1:], stdout, stderr)
	case "accel":
		return cmdAccel(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "ztgate: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: ztgate <command> [flags]

commands:
  run       [-c FILE]                 run the gateway (SIGHUP reloads, SIGTERM drains)
  validate  [-c FILE] [--print]       check a config exactly as a reload would; exit 0 or 1
  version                             print the version
  policy check -c FILE [request flags] evaluate one request against the policies offline
  accel bench [flags]                 measure private-key providers on this host

Without -c, ztgate uses $ZTGATE_CONFIG, then `+DefaultConfig+`, then the
embedded development config (configs/dev.yaml).
`)
}

// configFlag registers -c/--config.
func configFlag(fs *flag.FlagSet) *string {
	p := fs.String("c", "", "config file (default $ZTGATE_CONFIG, "+DefaultConfig+", or the embedded dev config)")
	fs.StringVar(p, "config", "", "alias of -c")
	return p
}

// resolveConfig picks the config path: the flag, $ZTGATE_CONFIG, the
// default location if present, else "" for the embedded config.
func resolveConfig(flagVal string) string {
	if flagVal != "" {
		return flagVal
	}
	if env := os.Getenv("ZTGATE_CONFIG"); env != "" {
		return env
	}
	if _, err := os.Stat(DefaultConfig); err == nil {
		return DefaultConfig
	}
	return ""
}

// loadConfig reads and validates the config, then merges Istio
// RequestAuthentication and PeerAuthentication documents from
// authz.policies_dir into it (they configure authn, which configs alone
// cannot translate).
func loadConfig(path string) (*configs.Config, error) {
	var cfg *configs.Config
	var err error
	if path == "" {
		cfg, err = configs.LoadEmbedded()
	} else {
		cfg, err = configs.Load(path)
	}
	if err != nil {
		return nil, err
	}
	if err := istio.MergeAuthn(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// printErrors writes every joined error on its own line.
func printErrors(w io.Writer, err error) {
	for _, e := range flatten(err) {
		fmt.Fprintln(w, e.Error())
	}
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// errorStrings renders errors for a structured log field.
func errorStrings(err error) []string {
	var out []string
	for _, e := range flatten(err) {
		out = append(out, e.Error())
	}
	return out
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	print := fs.Bool("print", false, "print the effective config (defaults applied, secrets redacted) as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	path := resolveConfig(*cfgPath)
	cfg, err := loadConfig(path)
	if err == nil {
		err = compileOnly(cfg)
	}
	if err != nil {
		printErrors(stderr, err)
		n := len(flatten(err))
		fmt.Fprintf(stderr, "%s: %d problem%s; nothing was started\n", displayName(path), n, plural(n))
		return 1
	}
	if *print {
		out, err := redactedJSON(cfg)
		if err != nil {
			fmt.Fprintln(stderr, "ztgate:", err)
			return 1
		}
		stdout.Write(append(out, '\n'))
		return 0
	}
	fmt.Fprintf(stdout, "%s: ok (%d listeners, %d routes, %d upstreams)\n",
		displayName(path), len(cfg.Listeners), len(cfg.Routes), len(cfg.Upstreams))
	return 0
}

func displayName(path string) string {
	if path == "" {
		return configs.Embedded
	}
	return path
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func splitCSV(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
