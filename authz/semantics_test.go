package authz_test

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/authz"
	"github.com/ztgate/ztgate/configs"
)

// base is the request every semantic case starts from.
func base() *authz.Attributes {
	return &authz.Attributes{
		RequestID:        "req-1",
		SourceIP:         netip.MustParseAddr("10.1.2.3"),
		RemoteIP:         netip.MustParseAddr("203.0.113.7"),
		Peer:             authz.PeerFromSPIFFEID("spiffe://cluster.local/ns/default/sa/web"),
		RequestPrincipal: "testing@secure.istio.io/testing@secure.istio.io",
		Claims: map[string]any{
			"iss":            "testing@secure.istio.io",
			"sub":            "testing@secure.istio.io",
			"groups":         []any{"group1", "group2"},
			"realm_access":   map[string]any{"roles": []any{"admin", "ops"}},
			"email_verified": true,
			"level":          float64(3),
			"nested":         map[string]any{"a": map[string]any{"b": "c"}},
		},
		Audiences:       []string{"api", "web"},
		Presenter:       "cli",
		Host:            "api.example.com:443",
		Method:          "GET",
		Path:            "/details/1",
		Headers:         map[string][]string{"x-token": {"abc"}, "user-agent": {"curl/8.0"}, "authorization": {"Bearer secret"}},
		DestinationPort: 443,
		SNI:             "api.example.com",
		Listener:        "public",
		Route:           "r",
	}
}

// config wraps an authz section (indented two spaces) in a minimal file
// with one listener and two routes, r (labels app=details) and other.
func config(t testing.TB, authzYAML string) *configs.Config {
	t.Helper()
	data := `
listeners:
  - name: public
    address: "127.0.0.1:0"
    tls: { names: [localhost] }
    POLICIES_L
routes:
  - name: r
    direct_response: { status: 200 }
    labels: { app: details, version: v1 }
    POLICIES_R
  - name: other
    direct_response: { status: 200 }
authz:
` + authzYAML
	lp, rp := "", ""
	if i := strings.Index(authzYAML, "#listener:"); i >= 0 {
		lp = "policies: [" + strings.TrimSpace(strings.SplitN(authzYAML[i+len("#listener:"):], "\n", 2)[0]) + "]"
	}
	if i := strings.Index(authzYAML, "#route:"); i >= 0 {
		rp = "policies: [" + strings.TrimSpace(strings.SplitN(authzYAML[i+len("#route:"):], "\n", 2)[0]) + "]"
	}
	data = strings.Replace(strings.Replace(data, "POLICIES_L", lp, 1), "POLICIES_R", rp, 1)
	cfg, err := configs.Parse("test.yaml", []byte(data), os.Environ())
	if err != nil {
		t.Fatalf("config: %v\n%s", err, data)
	}
	return cfg
}

func engine(t testing.TB, authzYAML string) *authz.Engine {
	t.Helper()
	e, err := authz.New(config(t, authzYAML), authz.Deps{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

// allowRule is an ALLOW policy with one rule given as flow YAML.
func allowRule(rule string) string {
	return "  policies:\n    - name: p\n      action: ALLOW\n      rules:\n        - " + rule + "\n"
}

func denyRule(rule string) string {
	return "  policies:\n    - name: p\n      action: DENY\n      rules:\n        - " + rule + "\n"
}

type semCase struct {
	name   string
	authz  string
	mod    func(a *authz.Attributes)
	allow  bool
	policy string // the deciding policy, "-" to skip the check
	rule   int    // the matching rule, checked when policy != "-"
}

func src(s string) string  { return "{from: [{source: {" + s + "}}]}" }
func op(s string) string   { return "{to: [{operation: {" + s + "}}]}" }
func when(s string) string { return "{when: [" + s + "]}" }

func TestSemantics(t *testing.T) {
	ok, no := true, false
	cases := []semCase{
		// Evaluation order and policy shapes.
		{"no policies allows", "  policies: []\n", nil, ok, "", -1},
		{"empty ALLOW policy denies all", "  policies:\n    - name: p\n      action: ALLOW\n", nil, no, "", -1},
		{"ALLOW with empty rule allows all", "  policies:\n    - name: p\n      rules: [{}]\n", nil, ok, "p", 0},
		{"DENY with no rules matches nothing", "  policies:\n    - name: p\n      action: DENY\n", nil, ok, "", -1},
		{"DENY with empty rule denies all", "  policies:\n    - name: p\n      action: DENY\n      rules: [{}]\n", nil, no, "p", 0},
		{"DENY before ALLOW", "  policies:\n    - name: a\n      rules: [{}]\n    - name: d\n      action: DENY\n      rules: [{}]\n", nil, no, "d", 0},
		{"second ALLOW matches", "  policies:\n    - name: a\n      rules: [" + op("paths: [/nope]") + "]\n    - name: b\n      rules: [" + op("paths: [/details/*]") + "]\n", nil, ok, "b", 0},
		{"second rule matches", "  policies:\n    - name: a\n      rules: [" + op("paths: [/nope]") + ", " + op("methods: [GET]") + "]\n", nil, ok, "a", 1},
		{"no ALLOW matches denies", "  policies:\n    - name: a\n      rules: [" + op("paths: [/nope]") + "]\n", nil, no, "", -1},
		{"DENY not matching then ALLOW", "  policies:\n    - name: d\n      action: DENY\n      rules: [" + op("paths: [/admin]") + "]\n    - name: a\n      rules: [{}]\n", nil, ok, "a", 0},
		{"DENY alone not matching allows", denyRule(op("paths: [/admin]")), nil, ok, "", -1},
		{"AUDIT does not decide", "  policies:\n    - name: au\n      action: AUDIT\n      rules: [{}]\n", nil, ok, "", -1},
		{"AUDIT with DENY", "  policies:\n    - name: au\n      action: AUDIT\n      rules: [{}]\n    - name: d\n      action: DENY\n      rules: [{}]\n", nil, no, "d", 0},
		{"dry-run DENY is not enforced", "  policies:\n    - name: d\n      action: DENY\n      dry_run: true\n      rules: [{}]\n", nil, ok, "", -1},
		{"dry-run ALLOW is not enforced", "  policies:\n    - name: a\n      dry_run: true\n      rules: [" + op("paths: [/nope]") + "]\n", nil, ok, "", -1},
		// Attachment.
		{"route policy applies", "  #route: a\n  policies:\n    - name: a\n      rules: [" + op("paths: [/nope]") + "]\n", nil, no, "", -1},
		{"route policy does not apply elsewhere", "  #route: a\n  policies:\n    - name: a\n      rules: [" + op("paths: [/nope]") + "]\n", func(a *authz.Attributes) { a.Route = "other" }, ok, "", -1},
		{"listener policy applies", "  #listener: d\n  policies:\n    - name: d\n      action: DENY\n      rules: [{}]\n", func(a *authz.Attributes) { a.Route = "other" }, no, "d", 0},
		{"selector matches route labels", "  policies:\n    - name: d\n      action: DENY\n      selector: {match_labels: {app: details}}\n      rules: [{}]\n", nil, no, "d", 0},
		{"selector needs every label", "  policies:\n    - name: d\n      action: DENY\n      selector: {match_labels: {app: details, version: v2}}\n      rules: [{}]\n", nil, ok, "", -1},
		{"selector skips other route", "  policies:\n    - name: d\n      action: DENY\n      selector: {match_labels: {app: details}}\n      rules: [{}]\n", func(a *authz.Attributes) { a.Route = "other" }, ok, "", -1},
		// Source fields.
		{"principals exact", allowRule(src(`principals: ["cluster.local/ns/default/sa/web"]`)), nil, ok, "p", 0},
		{"principals miss", allowRule(src(`principals: ["cluster.local/ns/default/sa/db"]`)), nil, no, "", -1},
		{"principals prefix", allowRule(src(`principals: ["cluster.local/ns/default/*"]`)), nil, ok, "p", 0},
		{"principals suffix", allowRule(src(`principals: ["*/sa/web"]`)), nil, ok, "p", 0},
		{"principals presence", allowRule(src(`principals: ["*"]`)), nil, ok, "p", 0},
		{"principals presence without peer", allowRule(src(`principals: ["*"]`)), func(a *authz.Attributes) { a.Peer = authz.Peer{} }, no, "", -1},
		{"not_principals excludes", allowRule(src(`not_principals: ["*/sa/web"]`)), nil, no, "", -1},
		{"not_principals * matches unauthenticated", allowRule(src(`not_principals: ["*"]`)), func(a *authz.Attributes) { a.Peer = authz.Peer{} }, ok, "p", 0},
		{"request_principals exact", allowRule(src(`request_principals: ["testing@secure.istio.io/testing@secure.istio.io"]`)), nil, ok, "p", 0},
		{"request_principals prefix", allowRule(src(`request_principals: ["testing@secure.istio.io/*"]`)), nil, ok, "p", 0},
		{"request_principals presence no token", allowRule(src(`request_principals: ["*"]`)), func(a *authz.Attributes) { a.RequestPrincipal = "" }, no, "", -1},
		{"not_request_principals", allowRule(src(`not_request_principals: ["testing@*"]`)), nil, no, "", -1},
		{"namespaces", allowRule(src(`namespaces: [default]`)), nil, ok, "p", 0},
		{"namespaces miss", allowRule(src(`namespaces: [prod]`)), nil, no, "", -1},
		{"not_namespaces", allowRule(src(`not_namespaces: [default]`)), nil, no, "", -1},
		{"not_namespaces other", allowRule(src(`not_namespaces: [prod]`)), nil, ok, "p", 0},
		{"service_accounts", allowRule(src(`service_accounts: [default/web]`)), nil, ok, "p", 0},
		{"service_accounts miss", allowRule(src(`service_accounts: [prod/web]`)), nil, no, "", -1},
		{"not_service_accounts", allowRule(src(`not_service_accounts: [default/web]`)), nil, no, "", -1},
		{"trust_domains", allowRule(src(`trust_domains: [cluster.local]`)), nil, ok, "p", 0},
		{"trust_domains case-insensitive", allowRule(src(`trust_domains: [Cluster.Local]`)), nil, ok, "p", 0},
		{"not_trust_domains", allowRule(src(`not_trust_domains: [cluster.local]`)), nil, no, "", -1},
		{"ip_blocks", allowRule(src(`ip_blocks: [10.0.0.0/8]`)), nil, ok, "p", 0},
		{"ip_blocks bare ip", allowRule(src(`ip_blocks: [10.1.2.3]`)), nil, ok, "p", 0},
		{"ip_blocks uses the direct peer not XFF", allowRule(src(`ip_blocks: [203.0.113.0/24]`)), nil, no, "", -1},
		{"ip_blocks ipv6", allowRule(src(`ip_blocks: ["2001:db8::/32"]`)), func(a *authz.Attributes) { a.SourceIP = netip.MustParseAddr("2001:db8::5") }, ok, "p", 0},
		{"not_ip_blocks", allowRule(src(`not_ip_blocks: [10.0.0.0/8]`)), nil, no, "", -1},
		{"remote_ip_blocks uses XFF", allowRule(src(`remote_ip_blocks: [203.0.113.0/24]`)), nil, ok, "p", 0},
		{"remote_ip_blocks falls back to peer", allowRule(src(`remote_ip_blocks: [10.0.0.0/8]`)), func(a *authz.Attributes) { a.RemoteIP = netip.Addr{} }, ok, "p", 0},
		{"not_remote_ip_blocks", allowRule(src(`not_remote_ip_blocks: [203.0.113.7]`)), nil, no, "", -1},
		{"deny ip block", denyRule(src(`ip_blocks: [10.1.0.0/16]`)), nil, no, "p", 0},
		{"source fields are ANDed", allowRule(src(`namespaces: [default], ip_blocks: [192.168.0.0/16]`)), nil, no, "", -1},
		{"sources are ORed", allowRule("{from: [{source: {namespaces: [prod]}}, {source: {namespaces: [default]}}]}"), nil, ok, "p", 0},
		{"values in a field are ORed", allowRule(src(`namespaces: [prod, default]`)), nil, ok, "p", 0},
		// Operation fields.
		{"hosts exact ignores port", allowRule(op(`hosts: [api.example.com]`)), nil, ok, "p", 0},
		{"hosts with port", allowRule(op(`hosts: ["api.example.com:443"]`)), nil, ok, "p", 0},
		{"hosts case-insensitive", allowRule(op(`hosts: [API.Example.COM]`)), nil, ok, "p", 0},
		{"hosts suffix", allowRule(op(`hosts: ["*.example.com"]`)), nil, ok, "p", 0},
		{"hosts miss", allowRule(op(`hosts: [www.example.com]`)), nil, no, "", -1},
		{"not_hosts", allowRule(op(`not_hosts: ["*.example.com"]`)), nil, no, "", -1},
		{"ports", allowRule(op(`ports: ["443"]`)), nil, ok, "p", 0},
		{"ports miss", allowRule(op(`ports: ["8443"]`)), nil, no, "", -1},
		{"not_ports", allowRule(op(`not_ports: ["443"]`)), nil, no, "", -1},
		{"methods", allowRule(op(`methods: [GET, HEAD]`)), nil, ok, "p", 0},
		{"methods miss", allowRule(op(`methods: [POST]`)), nil, no, "", -1},
		{"not_methods", allowRule(op(`not_methods: [GET]`)), nil, no, "", -1},
		{"paths exact", allowRule(op(`paths: [/details/1]`)), nil, ok, "p", 0},
		{"paths exact miss", allowRule(op(`paths: [/details]`)), nil, no, "", -1},
		{"paths prefix", allowRule(op(`paths: ["/details/*"]`)), nil, ok, "p", 0},
		{"paths suffix", allowRule(op(`paths: ["*/1"]`)), nil, ok, "p", 0},
		{"paths presence", allowRule(op(`paths: ["*"]`)), nil, ok, "p", 0},
		{"paths ignore the query", allowRule(op(`paths: [/details/1]`)), func(a *authz.Attributes) { a.RawQuery = "x=1" }, ok, "p", 0},
		{"not_paths", allowRule(op(`not_paths: ["/details/*"]`)), nil, no, "", -1},
		{"template {*} one segment", allowRule(op(`paths: ["/details/{*}"]`)), nil, ok, "p", 0},
		{"template {*} not two segments", allowRule(op(`paths: ["/details/{*}"]`)), func(a *authz.Attributes) { a.Path = "/details/1/reviews" }, no, "", -1},
		{"template {*} not empty segment", allowRule(op(`paths: ["/details/{*}"]`)), func(a *authz.Attributes) { a.Path = "/details/" }, no, "", -1},
		{"template {*} middle", allowRule(op(`paths: ["/details/{*}/reviews"]`)), func(a *authz.Attributes) { a.Path = "/details/7/reviews" }, ok, "p", 0},
		{"template {**} many segments", allowRule(op(`paths: ["/details/{**}"]`)), func(a *authz.Attributes) { a.Path = "/details/1/reviews/2" }, ok, "p", 0},
		{"template {**} zero segments", allowRule(op(`paths: ["/details/{**}"]`)), func(a *authz.Attributes) { a.Path = "/details/" }, ok, "p", 0},
		{"template {**} needs the slash", allowRule(op(`paths: ["/details/{**}"]`)), func(a *authz.Attributes) { a.Path = "/details" }, no, "", -1},
		{"template {*} and {**}", allowRule(op(`paths: ["/api/{*}/items/{**}"]`)), func(a *authz.Attributes) { a.Path = "/api/v1/items/a/b" }, ok, "p", 0},
		{"not_paths template", denyRule(op(`not_paths: ["/public/{**}"]`)), nil, no, "p", 0},
		{"operation fields are ANDed", allowRule(op(`methods: [GET], paths: [/other]`)), nil, no, "", -1},
		{"operations are ORed", allowRule("{to: [{operation: {methods: [POST]}}, {operation: {paths: [/details/1]}}]}"), nil, ok, "p", 0},
		{"from and to are ANDed", allowRule("{from: [{source: {namespaces: [default]}}], to: [{operation: {methods: [POST]}}]}"), nil, no, "", -1},
		// When conditions.
		{"claim string", allowRule(when(`{key: "request.auth.claims[iss]", values: [testing@secure.istio.io]}`)), nil, ok, "p", 0},
		{"claim list any element", allowRule(when(`{key: "request.auth.claims[groups]", values: [group2]}`)), nil, ok, "p", 0},
		{"claim list miss", allowRule(when(`{key: "request.auth.claims[groups]", values: [group3]}`)), nil, no, "", -1},
		{"claim nested list", allowRule(when(`{key: "request.auth.claims[realm_access][roles]", values: [admin]}`)), nil, ok, "p", 0},
		{"claim nested three levels", allowRule(when(`{key: "request.auth.claims[nested][a][b]", values: [c]}`)), nil, ok, "p", 0},
		{"claim nested through a string", allowRule(when(`{key: "request.auth.claims[iss][x]", values: ["*"]}`)), nil, no, "", -1},
		{"claim bool", allowRule(when(`{key: "request.auth.claims[email_verified]", values: ["true"]}`)), nil, ok, "p", 0},
		{"claim number", allowRule(when(`{key: "request.auth.claims[level]", values: ["3"]}`)), nil, ok, "p", 0},
		{"claim absent", allowRule(when(`{key: "request.auth.claims[missing]", values: ["*"]}`)), nil, no, "", -1},
		{"claim not_values", allowRule(when(`{key: "request.auth.claims[groups]", not_values: [group1]}`)), nil, no, "", -1},
		{"claim not_values absent", allowRule(when(`{key: "request.auth.claims[missing]", not_values: [x]}`)), nil, ok, "p", 0},
		{"claim prefix", allowRule(when(`{key: "request.auth.claims[groups]", values: ["group*"]}`)), nil, ok, "p", 0},
		{"claims without token", allowRule(when(`{key: "request.auth.claims[groups]", values: [group1]}`)), func(a *authz.Attributes) { a.Claims = nil }, no, "", -1},
		{"request.auth.principal", allowRule(when(`{key: request.auth.principal, values: ["testing@secure.istio.io/*"]}`)), nil, ok, "p", 0},
		{"request.auth.audiences", allowRule(when(`{key: request.auth.audiences, values: [web]}`)), nil, ok, "p", 0},
		{"request.auth.audiences miss", allowRule(when(`{key: request.auth.audiences, values: [other]}`)), nil, no, "", -1},
		{"request.auth.presenter", allowRule(when(`{key: request.auth.presenter, values: [cli]}`)), nil, ok, "p", 0},
		{"request.headers", allowRule(when(`{key: "request.headers[X-Token]", values: [abc]}`)), nil, ok, "p", 0},
		{"request.headers presence absent", allowRule(when(`{key: "request.headers[x-missing]", values: ["*"]}`)), nil, no, "", -1},
		{"request.headers not_values", allowRule(when(`{key: "request.headers[user-agent]", not_values: ["curl/*"]}`)), nil, no, "", -1},
		{"source.ip", allowRule(when(`{key: source.ip, values: [10.1.2.0/24]}`)), nil, ok, "p", 0},
		{"source.ip not_values", allowRule(when(`{key: source.ip, not_values: [10.1.2.3]}`)), nil, no, "", -1},
		{"remote.ip", allowRule(when(`{key: remote.ip, values: [203.0.113.0/24]}`)), nil, ok, "p", 0},
		{"source.principal", allowRule(when(`{key: source.principal, values: ["cluster.local/ns/default/sa/web"]}`)), nil, ok, "p", 0},
		{"source.namespace", allowRule(when(`{key: source.namespace, values: [default]}`)), nil, ok, "p", 0},
		{"destination.port", allowRule(when(`{key: destination.port, values: ["443"]}`)), nil, ok, "p", 0},
		{"destination.port not_values", allowRule(when(`{key: destination.port, not_values: ["443"]}`)), nil, no, "", -1},
		{"connection.sni", allowRule(when(`{key: connection.sni, values: ["*.example.com"]}`)), nil, ok, "p", 0},
		{"values and not_values both hold", allowRule(when(`{key: "request.auth.claims[groups]", values: [group1], not_values: [group9]}`)), nil, ok, "p", 0},
		{"conditions are ANDed", allowRule(when(`{key: source.namespace, values: [default]}, {key: connection.sni, values: [other]}`)), nil, no, "", -1},
		{"everything together", allowRule(`{from: [{source: {principals: ["*"], request_principals: ["*"]}}], to: [{operation: {hosts: ["api.example.com"], methods: [GET], paths: ["/details/{*}"]}}], when: [{key: "request.auth.claims[groups]", values: [group1]}]}`), nil, ok, "p", 0},
	}
	if len(cases) < 80 {
		t.Fatalf("the suite needs at least 80 cases, has %d", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := engine(t, tc.authz)
			a := base()
			if tc.mod != nil {
				tc.mod(a)
			}
			d := e.Decide(context.Background(), a)
			if d.Allowed != tc.allow {
				t.Fatalf("Allowed = %v, want %v\n%s", d.Allowed, tc.allow, e.DecideExplain(context.Background(), a).Explain())
			}
			if tc.policy != "-" && (d.Policy != tc.policy || d.Rule != tc.rule) {
				t.Errorf("decided by %q rule %d, want %q rule %d (%s)", d.Policy, d.Rule, tc.policy, tc.rule, d.Reason)
			}
			wantStatus := 200
			if !tc.allow {
				wantStatus = 403
			}
			if d.Status != wantStatus {
				t.Errorf("Status = %d, want %d", d.Status, wantStatus)
			}
		})
	}
}

func parseConfig(authzYAML string) (*configs.Config, error) {
	return configs.Parse("test.yaml", []byte(`
listeners:
  - name: public
    address: "127.0.0.1:0"
    tls: { names: [localhost] }
routes:
  - name: r
    direct_response: { status: 200 }
authz:
`+authzYAML), os.Environ())
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
