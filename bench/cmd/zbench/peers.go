package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// peer is one server under test. Each is configured to do the same work
// per scenario: terminate TLS and either answer a 2-byte body
// (handshake scenarios) or proxy to the 1 KiB upstream over a keep-alive
// pool (proxy scenarios). One worker/thread, pinned to CPU 1.
type peer struct {
	name   string
	order  int
	base   int // port base; scenario offsets are added
	bin    string
	argv   func(r *runner, sc scenario, conf string) []string
	env    []string
	write  func(r *runner, sc scenario, port int) (string, error)
	cannot map[string]string // scenario → why this peer cannot do it
}

func (p *peer) supports(sc string) bool {
	if _, no := p.cannot[sc]; no {
		return false
	}
	return p.bin != ""
}

func (p *peer) port(sc scenario) int { return p.base + sc.portOffset }

func (r *runner) start(p *peer, sc scenario) (*proc, error) {
	conf, err := p.write(r, sc, p.port(sc))
	if err != nil {
		return nil, err
	}
	return r.spawn(p.name, "1", p.env, p.argv(r, sc, conf)...)
}

func (e *env) findPeers(r *runner) {
	zt := abs(r.o.ztgate)
	if _, err := os.Stat(zt); err != nil {
		zt = ""
	}
	caddy := lookPath("caddy")
	if caddy == "" {
		if gp, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			c := filepath.Join(strings.TrimSpace(string(gp)), "bin", "caddy")
			if _, err := os.Stat(c); err == nil {
				caddy = c
			}
		}
	}
	e.peers = []*peer{
		{name: "ztgate", order: 0, base: 23000, bin: zt, env: []string{"GOMAXPROCS=1"},
			argv:  func(r *runner, sc scenario, conf string) []string { return []string{zt, "run", "-c", conf} },
			write: writeZtgate},
		{name: "nginx", order: 1, base: 20000, bin: lookPath("nginx"),
			argv: func(r *runner, sc scenario, conf string) []string {
				return []string{lookPath("nginx"), "-p", r.env.dir, "-c", conf}
			},
			write: writeNginx},
		{name: "haproxy", order: 2, base: 21000, bin: lookPath("haproxy"),
			argv: func(r *runner, sc scenario, conf string) []string {
				return []string{lookPath("haproxy"), "-db", "-f", conf}
			},
			write: writeHAProxy},
		{name: "caddy", order: 3, base: 22000, bin: caddy, env: []string{"GOMAXPROCS=1"},
			argv:  func(r *runner, sc scenario, conf string) []string { return []string{caddy, "run", "--config", conf} },
			write: writeCaddy},
	}
	for _, p := range e.peers {
		if p.bin == "" {
			logf("peer %s not installed: left out (make bench installs it)", p.name)
			continue
		}
		switch p.name {
		case "ztgate":
			e.versions[p.name] = versionOf(p.bin, "version")
		case "nginx":
			e.versions[p.name] = versionOf(p.bin, "-v")
		case "haproxy":
			e.versions[p.name] = versionOf(p.bin, "-v")
		case "caddy":
			e.versions[p.name] = versionOf("go", "version", "-m", p.bin)
			if out, err := exec.Command("go", "version", "-m", p.bin).Output(); err == nil {
				for _, l := range strings.Split(string(out), "\n") {
					if f := strings.Fields(l); len(f) >= 3 && f[0] == "mod" {
						e.versions[p.name] = "caddy " + f[2]
					}
				}
			}
		}
	}
}

func (sc scenario) certKind() string {
	if strings.HasSuffix(sc.name, "-rsa") {
		return "rsa"
	}
	return "ecdsa"
}

func writeZtgate(r *runner, sc scenario, port int) (string, error) {
	c := r.env.certs[sc.certKind()]
	conf := filepath.Join(r.env.dir, "ztgate-"+sc.name+".yaml")
	target := "direct_response: { status: 200, body: \"ok\" }"
	if sc.proxy {
		target = "upstream: up"
	}
	return conf, writeTemplate(conf, `storage: {{.Dir}}/ztgate-state
log: { level: error, access_log: false }
admin: { address: "off" }
listeners:
  - name: bench
    address: "127.0.0.1:{{.Port}}"
    protocols: [h1, h2]
    tls: { files: [{ cert: "{{.Cert}}", key: "{{.Key}}" }] }
    limits: { max_connections: 20000 }
upstreams:
  - name: up
    endpoints: ["127.0.0.1:{{.Up}}"]
    max_idle_conns: 256
    retries: { attempts: 0 }
routes:
  - name: r
    {{.Target}}
`, map[string]any{"Dir": r.env.dir, "Port": port, "Cert": c.cert, "Key": c.key, "Up": upstreamPort, "Target": target})
}

func writeNginx(r *runner, sc scenario, port int) (string, error) {
	c := r.env.certs[sc.certKind()]
	conf := filepath.Join(r.env.dir, "nginx-"+sc.name+".conf")
	loc := `return 200 "ok";`
	if sc.proxy {
		loc = `proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";`
	}
	return conf, writeTemplate(conf, `daemon off;
master_process off;
worker_processes 1;
error_log {{.Dir}}/nginx-error.log warn;
pid {{.Dir}}/nginx-{{.Name}}.pid;
events { worker_connections 19000; }
http {
  access_log off;
  client_body_temp_path {{.Dir}}/tmp-body;
  proxy_temp_path {{.Dir}}/tmp-proxy;
  fastcgi_temp_path {{.Dir}}/tmp-fcgi;
  uwsgi_temp_path {{.Dir}}/tmp-uwsgi;
  scgi_temp_path {{.Dir}}/tmp-scgi;
  keepalive_requests 1000000;
  upstream up { server 127.0.0.1:{{.Up}}; keepalive 128; }
  server {
    listen 127.0.0.1:{{.Port}} ssl http2;
    ssl_certificate {{.Cert}};
    ssl_certificate_key {{.Key}};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets off;
    ssl_session_cache off;
    location / { {{.Loc}} }
  }
}
`, map[string]any{"Dir": r.env.dir, "Name": sc.name, "Port": port, "Cert": c.cert, "Key": c.key, "Up": upstreamPort, "Loc": loc})
}

func writeHAProxy(r *runner, sc scenario, port int) (string, error) {
	c := r.env.certs[sc.certKind()]
	conf := filepath.Join(r.env.dir, "haproxy-"+sc.name+".cfg")
	action := "http-request return status 200 content-type text/plain string ok"
	if sc.proxy {
		action = "default_backend up"
	}
	return conf, writeTemplate(conf, `global
  nbthread 1
  maxconn 9000
  no strict-limits
  tune.ssl.cachesize 0
  ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:{{.Port}} ssl crt {{.Combined}} alpn h2,http/1.1
  {{.Action}}
backend up
  http-reuse safe
  server up1 127.0.0.1:{{.Up}}
`, map[string]any{"Port": port, "Combined": c.combined, "Up": upstreamPort, "Action": action})
}

func writeCaddy(r *runner, sc scenario, port int) (string, error) {
	c := r.env.certs[sc.certKind()]
	conf := filepath.Join(r.env.dir, "caddy-"+sc.name+".json")
	handle := `{"handler":"static_response","body":"ok"}`
	if sc.proxy {
		handle = fmt.Sprintf(`{"handler":"reverse_proxy","upstreams":[{"dial":"127.0.0.1:%d"}],"transport":{"protocol":"http","keep_alive":{"max_idle_conns_per_host":128}}}`, upstreamPort)
	}
	return conf, os.WriteFile(conf, []byte(fmt.Sprintf(`{
  "admin": {"disabled": true},
  "logging": {"logs": {"default": {"level": "ERROR"}}},
  "storage": {"module": "file_system", "root": %q},
  "apps": {
    "http": {"servers": {"bench": {
      "listen": ["127.0.0.1:%d"],
      "protocols": ["h1", "h2"],
      "automatic_https": {"disable": true},
      "tls_connection_policies": [{"default_sni": %q}],
      "routes": [{"handle": [%s]}]
    }}},
    "tls": {
      "certificates": {"load_files": [{"certificate": %q, "key": %q}]},
      "session_tickets": {"disabled": true}
    }
  }
}`, filepath.Join(r.env.dir, "caddy-state"), port, serverName, handle, c.cert, c.key)), 0o644)
}
