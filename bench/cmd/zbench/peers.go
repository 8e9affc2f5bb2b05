package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// peer is one server under test. Each is configured to do the same work
// per scenario: terminate TLS and either answer a 2-byte body
// (handshake scenarios) or proxy to the 1 KiB upstream over a keep-alive
// pool (proxy scenarios); pass TLS through by SNI (egress); answer DNS
// from its cache (dns). One worker/thread, pinned to CPU 1.
type peer struct {
	name  string
	base  int // port base; scenario offsets are added
	bin   string
	argv  func(r *runner, t *target, conf string) []string
	env   []string
	write func(r *runner, sc scenario, t *target) (string, error)
	// shared is set for a pseudo-peer that runs no server of its own
	// ("direct": the load goes straight to the origin, whose CPU is read).
	shared func(r *runner) *proc
}

func (p *peer) installed() bool { return p.bin != "" || p.shared != nil }

// target is one peer in one variant (e.g. ztgate with JWT and no token
// cache) in one scenario.
type target struct {
	p       *peer
	variant string
	port    int
}

func (t *target) label() string {
	if t.variant == "" {
		return t.p.name
	}
	return t.p.name + " " + t.variant
}

func (e *env) peer(name string) *peer {
	for _, p := range e.peers {
		if p.name == name {
			return p
		}
	}
	return nil
}

// start writes the target's config and starts it pinned to CPU 1. ztgate
// configs are first checked with `ztgate validate`: a refusal means this
// build lacks the feature, which the report shows instead of numbers.
func (r *runner) start(sc scenario, t *target) (*proc, error) {
	if t.p.shared != nil {
		return t.p.shared(r), nil // not ours to stop
	}
	conf, err := t.p.write(r, sc, t)
	if err != nil {
		return nil, err
	}
	if t.p.name == "ztgate" {
		if out, err := exec.Command(t.p.bin, "validate", "-c", conf).CombinedOutput(); err != nil {
			return nil, &notAvailable{"`ztgate validate` refuses the config: " + firstLine(string(out))}
		}
	}
	return r.spawn(t.p.name, "1", t.p.env, t.p.argv(r, t, conf)...)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i > 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

func goBin(name string) string {
	if p := lookPath(name); p != "" {
		return p
	}
	if gp, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		c := filepath.Join(strings.TrimSpace(string(gp)), "bin", name)
		if _, err := os.Stat(c); err == nil {
			return c
		}
	}
	return ""
}

// goModVersion reads the main module's version of a go-installed binary
// (`caddy version` says "unknown" for those).
func goModVersion(bin, label string) string {
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "mod" {
			return label + " " + f[2]
		}
	}
	return "unknown"
}

func (e *env) findPeers(r *runner) {
	zt := abs(r.o.ztgate)
	if _, err := os.Stat(zt); err != nil {
		zt = ""
	}
	caddy, coredns := goBin("caddy"), goBin("coredns")
	e.peers = []*peer{
		{name: "ztgate", base: 23000, bin: zt, env: []string{"GOMAXPROCS=1"},
			argv:  func(r *runner, t *target, conf string) []string { return append(netnsExec(t), zt, "run", "-c", conf) },
			write: writeZtgate},
		{name: "nginx", base: 20000, bin: lookPath("nginx"),
			argv: func(r *runner, t *target, conf string) []string {
				return []string{lookPath("nginx"), "-p", r.env.dir, "-c", conf}
			},
			write: writeNginx},
		{name: "haproxy", base: 21000, bin: lookPath("haproxy"),
			argv: func(r *runner, t *target, conf string) []string {
				return []string{lookPath("haproxy"), "-db", "-f", conf}
			},
			write: writeHAProxy},
		{name: "caddy", base: 22000, bin: caddy, env: []string{"GOMAXPROCS=1"},
			argv:  func(r *runner, t *target, conf string) []string { return []string{caddy, "run", "--config", conf} },
			write: writeCaddy},
		{name: "coredns", base: 24000, bin: coredns, env: []string{"GOMAXPROCS=1"},
			argv:  func(r *runner, t *target, conf string) []string { return []string{coredns, "-conf", conf} },
			write: writeCoreDNS},
		{name: "dnsmasq", base: 26000, bin: lookPath("dnsmasq"),
			argv: func(r *runner, t *target, conf string) []string {
				return []string{lookPath("dnsmasq"), "-k", "--conf-file=" + conf}
			},
			write: writeDnsmasq},
		{name: "direct", shared: func(r *runner) *proc { return r.env.origin }},
	}
	for _, p := range e.peers {
		if !p.installed() {
			logf("peer %s not installed: left out (make bench installs it)", p.name)
			continue
		}
		switch p.name {
		case "ztgate":
			e.versions[p.name] = versionOf(p.bin, "version")
		case "nginx", "haproxy":
			e.versions[p.name] = versionOf(p.bin, "-v")
		case "caddy":
			e.versions[p.name] = goModVersion(p.bin, "caddy")
		case "coredns":
			e.versions[p.name] = goModVersion(p.bin, "coredns")
		case "dnsmasq":
			e.versions[p.name] = versionOf(p.bin, "--version")
		case "direct":
			e.versions[p.name] = "no proxy: the load goes straight to the origin (" + versionOf(lookPath("nginx"), "-v") + ")"
		}
	}
}

func (sc scenario) certKind() string {
	if strings.HasSuffix(sc.name, "-rsa") {
		return "rsa"
	}
	return "ecdsa"
}
