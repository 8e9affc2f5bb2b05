package rego_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ztgate/ztgate/authz"
	"github.com/ztgate/ztgate/authz/rego"
	"github.com/ztgate/ztgate/configs"
)

// BenchmarkRegoDecision: a full engine decision through a CUSTOM Rego
// policy (object result, claims and peer lookups), input built from the
// attributes each time.
func BenchmarkRegoDecision(b *testing.B) {
	e := engineWith(b, "testdata/object.rego", "data.ztgate.test.object.decision", time.Second)
	a := &authz.Attributes{
		Method: "GET", Path: "/people/1", RawQuery: "lang=en", Host: "api.example.com",
		SourceIP: netip.MustParseAddr("10.0.0.1"), RequestPrincipal: "iss/alice",
		Claims:  map[string]any{"groups": []any{"admins"}, "sub": "alice"},
		Headers: map[string][]string{"authorization": {"Bearer x"}, "user-agent": {"curl/8"}, "accept": {"*/*"}},
	}
	ctx := context.Background()
	if d := e.Decide(ctx, a); !d.Allowed {
		b.Fatalf("not allowed: %s", d.Reason)
	}
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(ctx, a)
	}
}

// chainYAML is zbench's jwt-h1 "chain" (bench/cmd/zbench chainAuthz):
// an IP block list, three DENY rules, an AUDIT, an ALLOW with 16 rules
// whose matching one is the last, and a CUSTOM Rego policy; all apply to
// the request. withRego false drops the Rego policy.
func chainYAML(b *testing.B, withRego bool) *authz.Engine {
	b.Helper()
	dir := b.TempDir()
	file := filepath.Join(dir, "bench.rego")
	if err := os.WriteFile(file, []byte(`package envoy.authz

default allow := false

allow if {
	input.attributes.request.http.method in {"GET", "HEAD"}
	not startswith(input.attributes.request.http.path, "/admin")
	"read" in split(input.jwt.claims.scope, " ")
	input.request_principal == "bench-issuer/bench-user"
}
`), 0o644); err != nil {
		b.Fatal(err)
	}
	var y strings.Builder
	y.WriteString(`listeners:
  - name: public
    address: "127.0.0.1:0"
    tls: { names: [localhost] }
routes:
  - name: r
    direct_response: { status: 200 }
    policies: [block-bad-ips, deny-admin, audit-writes, require-jwt`)
	if withRego {
		y.WriteString(", bench-rego")
	}
	y.WriteString(`]
authz:
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
          from: [{ source: { not_request_principals: ["bench-issuer/*"] } }]
        - when: [{ key: "request.headers[x-debug]", values: ["1", "true"] }]
    - name: audit-writes
      action: AUDIT
      rules:
        - to: [{ operation: { methods: [POST, PUT] } }]
    - name: require-jwt
      action: ALLOW
      rules:
`)
	for i := 1; i <= 15; i++ {
		fmt.Fprintf(&y, "        - { from: [{ source: { request_principals: [\"bench-issuer/svc%d\"] } }], to: [{ operation: { paths: [\"/svc%d/{**}\"] } }] }\n", i, i)
	}
	fmt.Fprintf(&y, `        - from: [{ source: { request_principals: ["bench-issuer/bench-user"] } }]
          to: [{ operation: { methods: [GET, HEAD], paths: ["/", "/api/{**}"] } }]
          when: [{ key: "request.auth.claims[groups]", values: [bench] }]
`)
	if withRego {
		fmt.Fprintf(&y, `    - name: bench-rego
      action: CUSTOM
      rego: { files: ["%s"], query: data.envoy.authz.allow }
`, file)
	}
	cfg, err := configs.Parse("bench.yaml", []byte(y.String()), nil)
	if err != nil {
		b.Fatal(err)
	}
	e, err := authz.New(cfg, authz.Deps{Rego: rego.Compiler, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// chainRequest is what the gateway's policy stage builds for one of
// zbench's wrk requests: GET / with the bench token's claims.
func chainRequest() *authz.Attributes {
	return &authz.Attributes{
		RequestID: "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
		SourceIP:  netip.MustParseAddr("127.0.0.1"), SourcePort: 43210,
		RequestPrincipal: "bench-issuer/bench-user",
		Claims: map[string]any{
			"iss": "bench-issuer", "sub": "bench-user", "aud": "bench",
			"iat": float64(1.7e9), "nbf": float64(1.7e9), "exp": float64(1.7e9 + 86400),
			"groups": []any{"bench", "readers"}, "scope": "read profile",
			"email": "bench-user@bench.test", "name": "zbench load generator",
		},
		Audiences: []string{"bench"},
		Host:      "127.0.0.1:8445", Method: "GET", Path: "/", Protocol: "HTTP/1.1",
		Headers: map[string][]string{
			"authorization": {"Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln"},
		},
		DestinationPort: 8445, SNI: "localhost",
		Listener: "public", Route: "r",
		ClaimsMemo: new(sync.Map), // the token is in the verified-token cache
	}
}

// BenchmarkChain: one decision of zbench's full policy chain (the
// jwt-h1 "chain" variant), and the same without its Rego policy.
//
//	go test -run '^$' -bench Chain -benchmem ./authz/rego/
func BenchmarkChain(b *testing.B) {
	for _, withRego := range []bool{true, false} {
		name := "rules+rego"
		if !withRego {
			name = "rules"
		}
		b.Run(name, func(b *testing.B) {
			e := chainYAML(b, withRego)
			a := chainRequest()
			ctx := context.Background()
			if d := e.Decide(ctx, a); !d.Allowed {
				b.Fatalf("denied: %s", d.Reason)
			}
			b.ReportAllocs()
			for b.Loop() {
				e.Decide(ctx, a)
			}
		})
	}
}
