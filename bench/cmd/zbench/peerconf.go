package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The peer configs, one writer per peer. Every server does the same work
// in a scenario; the comments name the settings that make it so (see
// shared/notes/peer-baselines.md for why each is needed).

func confPath(r *runner, peer string, sc scenario, t *target, ext string) string {
	name := peer + "-" + sc.name
	if t.variant != "" {
		name += "-" + strings.ReplaceAll(t.variant, " ", "-")
	}
	return filepath.Join(r.env.dir, name+ext)
}

// ztgate: the admin server always runs with pprof (profiles are taken
// from it in the last round); logs at error, no access log, except for
// the reload scenario, which reads the "config reloaded" lines.
func writeZtgate(r *runner, sc scenario, t *target) (string, error) {
	if err := prepareTransparent(r, sc, t); err != nil {
		return "", err
	}
	conf := confPath(r, "ztgate", sc, t, ".yaml")
	return conf, os.WriteFile(conf, []byte(ztgateYAML(r, sc, t, 0)), 0o644)
}

func ztgateYAML(r *runner, sc scenario, t *target, generation int) string {
	var b strings.Builder
	level := "error"
	if sc.kind == "reload" {
		level = "info"
	}
	fmt.Fprintf(&b, "storage: %s/ztgate-state\nlog: { level: %s, access_log: false }\nadmin: { address: \"127.0.0.1:%d\", pprof: true }\n",
		r.env.dir, level, ztAdminPort)
	if t.variant == "openssl" {
		b.WriteString("accel: { provider: openssl, required: true }\n")
	}
	switch sc.name {
	case "egress-conn", "egress-bulk":
		// The connect listener (the transparent one in egress-conn's
		// namespace); names resolve through the stub (allowed.test →
		// 127.0.0.1), and the rule's cidrs let the proxy dial loopback,
		// which the SSRF guard refuses otherwise.
		mode := "connect"
		if t.variant == "transparent" {
			mode = "transparent"
		}
		fmt.Fprintf(&b, `egress:
  listeners:
    - { name: bench, mode: %s, address: "127.0.0.1:%d" }
  resolver: { address: "127.0.0.1:%d" }
  limits: { max_connections: 20000, max_connections_per_source: 20000 }
  rules:
    - name: bench
      sni: %s
      cidrs: [127.0.0.1/32]
      ports: [%d]
`, mode, t.port, stubPort, yamlList(r.env.allow), originPort)
		return b.String()
	case "dns", "dns-miss":
		mode := "block"
		if t.variant == "nodetect" {
			mode = "off"
		}
		fmt.Fprintf(&b, `dns:
  listen: ["127.0.0.1:%d"]
  upstreams: [{ address: "127.0.0.1:%d" }]
  rate_limit: { qps: -1 }
  tunneling: { mode: %s }
`, t.port, stubPort, mode)
		return b.String()
	}
	c := r.env.certs[sc.certKind()]
	protocols := "[h1, h2]"
	if sc.name == "h3" {
		protocols = "[h1, h2, h3]"
	}
	fmt.Fprintf(&b, `listeners:
  - name: bench
    address: "127.0.0.1:%d"
    protocols: %s
    tls: { files: [{ cert: "%s", key: "%s" }] }
    limits: { max_connections: 20000 }
upstreams:
  - name: up
    endpoints: ["127.0.0.1:%d"]
    max_idle_conns: 256
    retries: { attempts: 0 }
routes:
`, t.port, protocols, c.cert, c.key, upstreamPort)
	switch {
	case sc.kind == "reload":
		n := reloadRoutes(r)
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "  - { name: r%d, match: { path: /r%d }, upstream: up, policies: [p%d] }\n", i, i, i)
		}
		// The last route changes with every generation, so each reload
		// really applies something.
		fmt.Fprintf(&b, "  - { name: gen, match: { path: /generation }, direct_response: { status: 200, body: \"%d\" } }\n", generation)
		b.WriteString("authz:\n  policies:\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "    - { name: p%d, action: ALLOW, rules: [{ to: [{ operation: { methods: [GET, HEAD], paths: [/r%d] } }] }] }\n", i, i)
		}
		return b.String()
	case !sc.proxy:
		b.WriteString("  - name: r\n    direct_response: { status: 200, body: \"ok\" }\n")
		return b.String()
	case t.variant == "chain":
		b.WriteString("  - name: r\n    upstream: up\n    policies: [block-bad-ips, deny-admin, audit-writes, require-jwt, bench-rego]\n")
	default:
		b.WriteString("  - name: r\n    upstream: up\n")
	}
	if strings.HasPrefix(t.variant, "jwt") || t.variant == "chain" {
		cache := ""
		if t.variant == "jwt nocache" {
			cache = "  token_cache_size: -1\n"
		}
		fmt.Fprintf(&b, `authn:
%s  jwt:
    - name: bench
      issuer: %s
      audiences: [bench]
      jwks_file: "%s"
      algorithms: [RS256]
`, cache, jwtIssuer, r.env.jwt.jwks)
	}
	if t.variant == "chain" {
		b.WriteString(chainAuthz(r))
	}
	return b.String()
}

// chainAuthz is the "full policy chain": 21 Istio-style rules in four
// policies (an IP block list, DENY rules, an AUDIT, an ALLOW list whose
// matching rule is the last) and one Rego policy, all applying to the
// benchmark's requests.
func chainAuthz(r *runner) string {
	rego := filepath.Join(r.env.dir, "bench.rego")
	os.WriteFile(rego, []byte(`package envoy.authz

default allow := false

allow if {
	input.attributes.request.http.method in {"GET", "HEAD"}
	not startswith(input.attributes.request.http.path, "/admin")
	"read" in split(input.jwt.claims.scope, " ")
	input.request_principal == "bench-issuer/bench-user"
}
`), 0o644)
	var b strings.Builder
	fmt.Fprintf(&b, `authz:
  policies:
    - name: block-bad-ips
      action: DENY
      rules:
        - from: [{ source: { remote_ip_blocks: [192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, "2001:db8::/32"] } }]
    - name: deny-admin
      action: DENY
      rules:
        - to: [{ operation: { paths: ["/admin/{**}", "/internal/{**}"] } }]
        - to: [{ operation: { methods: [DELETE, PATCH] } }]
          from: [{ source: { not_request_principals: ["%[1]s/*"] } }]
        - when: [{ key: "request.headers[x-debug]", values: ["1", "true"] }]
    - name: audit-writes
      action: AUDIT
      rules:
        - to: [{ operation: { methods: [POST, PUT] } }]
    - name: require-jwt
      action: ALLOW
      rules:
`, jwtIssuer)
	for i := 1; i <= 15; i++ {
		fmt.Fprintf(&b, "        - { from: [{ source: { request_principals: [\"%s/svc%d\"] } }], to: [{ operation: { paths: [\"/svc%d/{**}\"] } }] }\n", jwtIssuer, i, i)
	}
	fmt.Fprintf(&b, `        - from: [{ source: { request_principals: ["%s/%s"] } }]
          to: [{ operation: { methods: [GET, HEAD], paths: ["/", "/api/{**}"] } }]
          when: [{ key: "request.auth.claims[groups]", values: [bench] }]
    - name: bench-rego
      action: CUSTOM
      rego: { files: ["%s"], query: data.envoy.authz.allow }
`, jwtIssuer, jwtSubject, rego)
	return b.String()
}

func reloadRoutes(r *runner) int {
	if r.o.smoke {
		return 200
	}
	return 10000
}

func writeNginx(r *runner, sc scenario, t *target) (string, error) {
	conf := confPath(r, "nginx", sc, t, ".conf")
	if sc.name == "egress-conn" || sc.name == "egress-bulk" {
		// stream + ssl_preread: a map over the allowlist picks the origin;
		// any other name goes to a closed port.
		var m strings.Builder
		for _, n := range r.env.allow {
			fmt.Fprintf(&m, "    %s 127.0.0.1:%d;\n", n, originPort)
		}
		return conf, writeTemplate(conf, `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
error_log {{.Dir}}/nginx-error.log warn;
pid {{.Dir}}/nginx-{{.Name}}.pid;
events { worker_connections 8192; }
stream {
  map_hash_bucket_size 128;
  map $ssl_preread_server_name $up {
    hostnames;
{{.Map}}    default 127.0.0.1:1;
  }
  server { listen 127.0.0.1:{{.Port}} backlog=4096; ssl_preread on; proxy_pass $up; }
}
`, map[string]any{"Dir": r.env.dir, "Name": sc.name, "Port": t.port, "Map": m.String()})
	}
	c := r.env.certs[sc.certKind()]
	loc := `return 200 "ok";`
	if sc.proxy {
		loc = `proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";`
	}
	return conf, writeTemplate(conf, `daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
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
    listen 127.0.0.1:{{.Port}} ssl http2 backlog=4096;
    ssl_certificate {{.Cert}};
    ssl_certificate_key {{.Key}};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets off;
    ssl_session_cache off;
    location / { {{.Loc}} }
  }
}
`, map[string]any{"Dir": r.env.dir, "Name": sc.name, "Port": t.port, "Cert": c.cert, "Key": c.key, "Up": upstreamPort, "Loc": loc})
}

func writeHAProxy(r *runner, sc scenario, t *target) (string, error) {
	conf := confPath(r, "haproxy", sc, t, ".cfg")
	if sc.name == "egress-conn" || sc.name == "egress-bulk" {
		return conf, writeTemplate(conf, `global
  nbthread 1
  maxconn 9000
  no strict-limits
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:{{.Port}}
  tcp-request inspect-delay 5s
  tcp-request content accept if { req.ssl_hello_type 1 } { req.ssl_sni -i -f {{.Allow}} }
  tcp-request content reject
  default_backend be
backend be
  server origin 127.0.0.1:{{.Origin}}
`, map[string]any{"Port": t.port, "Allow": r.env.allowLst, "Origin": originPort})
	}
	c := r.env.certs[sc.certKind()]
	action := "http-request return status 200 content-type text/plain string ok"
	if sc.proxy {
		action = "default_backend up"
	}
	if t.variant == "jwt" {
		// peer-baselines M3: the bearer token's alg must be RS256 and its
		// signature verify with the public key, else 403.
		action = fmt.Sprintf(`http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.jwt_alg) var(txn.bearer),jwt_header_query('$.alg')
  http-request deny status 403 unless { var(txn.jwt_alg) -m str RS256 }
  http-request deny status 403 unless { var(txn.bearer),jwt_verify(txn.jwt_alg,"%s") -m int 1 }
  default_backend up`, r.env.jwt.pubPEM)
	}
	maxconn := 9000
	if sc.kind == "memory" {
		maxconn = 10500 // more fds than RLIMIT_NOFILE allows for 2 per conn: hence no strict-limits
	}
	return conf, writeTemplate(conf, `global
  nbthread 1
  maxconn {{.MaxConn}}
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
`, map[string]any{"Port": t.port, "Combined": c.combined, "Up": upstreamPort, "Action": action, "MaxConn": maxconn})
}

// caddy: JSON, because session tickets can only be disabled there.
func writeCaddy(r *runner, sc scenario, t *target) (string, error) {
	c := r.env.certs[sc.certKind()]
	conf := confPath(r, "caddy", sc, t, ".json")
	handle := `{"handler":"static_response","body":"ok"}`
	if sc.proxy {
		handle = fmt.Sprintf(`{"handler":"reverse_proxy","upstreams":[{"dial":"127.0.0.1:%d"}],"transport":{"protocol":"http","keep_alive":{"max_idle_conns_per_host":128}}}`, upstreamPort)
	}
	protocols := `["h1", "h2"]`
	if sc.name == "h3" {
		protocols = `["h1", "h2", "h3"]`
	}
	return conf, os.WriteFile(conf, []byte(fmt.Sprintf(`{
  "admin": {"disabled": true},
  "logging": {"logs": {"default": {"level": "ERROR"}}},
  "storage": {"module": "file_system", "root": %q},
  "apps": {
    "http": {"servers": {"bench": {
      "listen": ["127.0.0.1:%d"],
      "protocols": %s,
      "automatic_https": {"disable": true},
      "tls_connection_policies": [{"default_sni": %q}],
      "routes": [{"handle": [%s]}]
    }}},
    "tls": {
      "certificates": {"load_files": [{"certificate": %q, "key": %q}]},
      "session_tickets": {"disabled": true}
    }
  }
}`, filepath.Join(r.env.dir, "caddy-state"), t.port, protocols, serverName, handle, c.cert, c.key)), 0o644)
}

// CoreDNS: forward + cache, as peer-baselines M5.
func writeCoreDNS(r *runner, sc scenario, t *target) (string, error) {
	conf := confPath(r, "coredns", sc, t, ".Corefile")
	return conf, os.WriteFile(conf, []byte(fmt.Sprintf(`.:%d {
  bind 127.0.0.1
  forward . 127.0.0.1:%d
  cache 3600
}
`, t.port, stubPort)), 0o644)
}

// dnsmasq: single-threaded by design; forwards to the stub, caches.
func writeDnsmasq(r *runner, sc scenario, t *target) (string, error) {
	conf := confPath(r, "dnsmasq", sc, t, ".conf")
	return conf, os.WriteFile(conf, []byte(fmt.Sprintf(`port=%d
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
no-poll
server=127.0.0.1#%d
cache-size=10000
dns-forward-max=10000
pid-file=
`, t.port, stubPort)), 0o644)
}
