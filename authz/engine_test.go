package authz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/authz"
)

// TestNoNetHTTP keeps authz from knowing how a request arrived
// (DESIGN.md): the core and its pure subpackages import no net/http
// themselves, and nothing they depend on is the gateway, authn, OPA or
// the HTTP provider. (net/http does appear transitively, through the
// prometheus client and configs; that is not this package's doing.)
func TestNoNetHTTP(t *testing.T) {
	pkgs := []string{"github.com/ztgate/ztgate/authz", "github.com/ztgate/ztgate/authz/istio", "github.com/ztgate/ztgate/authz/ipset"}
	out, err := exec.Command("go", append([]string{"list", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}"}, pkgs...)...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ": ")
		for _, imp := range strings.Fields(imports) {
			if imp == "net/http" || strings.HasPrefix(imp, "net/http/") {
				t.Errorf("%s imports %s", pkg, imp)
			}
		}
	}
	out, err = exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...).Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/ztgate/ztgate/gateway", "github.com/ztgate/ztgate/authn", "github.com/ztgate/ztgate/egress",
			"github.com/ztgate/ztgate/authz/rego", "github.com/ztgate/ztgate/authz/extauthz", "github.com/open-policy-agent/",
		} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("authz depends on %s", dep)
			}
		}
	}
}

// fakeProvider is a CUSTOM provider that answers from a table and
// counts its calls.
type fakeProvider struct {
	res   authz.CustomResult
	err   error
	calls int
}

func (f *fakeProvider) Check(ctx context.Context, a *authz.Attributes) (authz.CustomResult, error) {
	f.calls++
	return f.res, f.err
}

func TestCustomOrder(t *testing.T) {
	const policies = `  policies:
    - name: ext
      provider: fake
    - name: d
      action: DENY
      rules: [{to: [{operation: {paths: [/admin]}}]}]
    - name: a
      rules: [{to: [{operation: {methods: [GET]}}]}]
`
	for _, tc := range []struct {
		name    string
		res     authz.CustomResult
		err     error
		path    string
		allow   bool
		policy  string
		action  authz.Action
		status  int
		headers int
	}{
		{"custom allows then ALLOW", authz.CustomResult{Allowed: true, UpstreamHeaders: []authz.Header{{"x-user", "alice"}}}, nil, "/x", true, "a", authz.ActionAllow, 200, 1},
		{"custom denies first", authz.CustomResult{Allowed: false, Status: 401, Body: "login"}, nil, "/x", false, "ext", authz.ActionCustom, 401, 0},
		{"custom error denies", authz.CustomResult{}, errors.New("boom"), "/x", false, "ext", authz.ActionCustom, 403, 0},
		{"custom allows but DENY matches", authz.CustomResult{Allowed: true}, nil, "/admin", false, "d", authz.ActionDeny, 403, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeProvider{res: tc.res, err: tc.err}
			e, err := authz.New(config(t, policies), authz.Deps{Custom: map[string]authz.CustomProvider{"fake": f}})
			if err != nil {
				t.Fatal(err)
			}
			a := base()
			a.Path = tc.path
			d := e.Decide(context.Background(), a)
			if d.Allowed != tc.allow || d.Policy != tc.policy || d.Action != tc.action || d.Status != tc.status || len(d.UpstreamHeaders) != tc.headers {
				t.Errorf("got allowed=%v policy=%q action=%s status=%d headers=%v; want %v %q %s %d %d (%s)",
					d.Allowed, d.Policy, d.Action, d.Status, d.UpstreamHeaders, tc.allow, tc.policy, tc.action, tc.status, tc.headers, d.Reason)
			}
			if f.calls != 1 {
				t.Errorf("provider called %d times, want 1", f.calls)
			}
		})
	}
}

func TestSeveralCustomProviders(t *testing.T) {
	const policies = `  policies:
    - name: one
      provider: f1
    - name: two
      provider: f2
      rules: [{to: [{operation: {paths: ["/secure/*"]}}]}]
`
	f1 := &fakeProvider{res: authz.CustomResult{Allowed: true}}
	f2 := &fakeProvider{res: authz.CustomResult{Allowed: false}}
	e, err := authz.New(config(t, policies), authz.Deps{Custom: map[string]authz.CustomProvider{"f1": f1, "f2": f2}})
	if err != nil {
		t.Fatal(err)
	}
	a := base()
	if d := e.Decide(context.Background(), a); !d.Allowed || f2.calls != 0 {
		t.Errorf("f2's rules do not match /details/1: want allowed without calling f2; got %v, f2 calls %d", d.Allowed, f2.calls)
	}
	a.Path = "/secure/x"
	if d := e.Decide(context.Background(), a); d.Allowed || d.Policy != "two" || f2.calls != 1 {
		t.Errorf("want deny by two; got %v %q (f2 calls %d)", d.Allowed, d.Policy, f2.calls)
	}
}

func TestAuditAndDryRunRecords(t *testing.T) {
	const policies = `  policies:
    - name: audit-admin
      action: AUDIT
      rules: [{to: [{operation: {paths: ["/details/*"]}}]}]
    - name: would-deny
      action: DENY
      dry_run: true
      rules: [{to: [{operation: {methods: [GET]}}]}]
`
	var buf bytes.Buffer
	reg := prometheus.NewRegistry()
	e, err := authz.New(config(t, policies), authz.Deps{Logger: slog.New(slog.NewJSONHandler(&buf, nil)), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Decide(context.Background(), base())
	if !d.Allowed {
		t.Fatalf("AUDIT and dry-run must not deny: %s", d.Reason)
	}
	if len(d.Audit) != 1 || d.Audit[0].Policy != "audit-admin" || d.Audit[0].Rule != 0 {
		t.Errorf("Audit = %+v", d.Audit)
	}
	if d.DryRun == nil || d.DryRun.Allowed || d.DryRun.Policy != "would-deny" {
		t.Fatalf("DryRun = %+v, want a would-be deny by would-deny", d.DryRun)
	}
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("decision log is not one JSON record: %v\n%s", err, buf.String())
	}
	for _, k := range []string{authz.LogDecision, authz.LogPolicy, authz.LogRule, authz.LogReason, authz.LogRequestID, authz.LogAudit, authz.LogDryRun, authz.LogHeaders} {
		if _, ok := rec[k]; !ok {
			t.Errorf("decision record lacks %q: %s", k, buf.String())
		}
	}
	if strings.Contains(buf.String(), "Bearer secret") {
		t.Errorf("the authorization header leaked into the log: %s", buf.String())
	}
	if n := counter(t, reg, "audit-admin", "AUDIT", "audit"); n != 1 {
		t.Errorf("audit counter = %v", n)
	}
	// A second engine (a reload) shares the counters.
	if _, err := authz.New(config(t, policies), authz.Deps{Metrics: reg}); err != nil {
		t.Fatalf("rebuilding on the same registry: %v", err)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, policy, action, decision string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ztgate_authz_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["policy"] == policy && l["action"] == action && l["decision"] == decision {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no counter %s/%s/%s", policy, action, decision)
	return 0
}

func TestDenyBody(t *testing.T) {
	e := engine(t, denyRule("{}"))
	d := e.Decide(context.Background(), base())
	body, ct := d.DenyBody()
	if ct != "application/json" || !strings.Contains(string(body), `"request_id":"req-1"`) || strings.Contains(string(body), "DENY") {
		t.Errorf("deny body %q (%s) must carry the request id and no internals", body, ct)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct{ name, authz, want string }{
		{"unknown when key", allowRule(when(`{key: request.auth.claims, values: [x]}`)), `authz.policies[0].rules[0].when[0].key: "request.auth.claims" is not a supported key`},
		{"istio-ignored key", allowRule(when(`{key: "experimental.envoy.filters.network.mysql_proxy[db.table]", values: [x]}`)), "is not a supported key"},
		{"bad path template", allowRule(op(`paths: ["/a/{**}/b"]`)), "authz.policies[0].rules[0].to[0].operation.paths[0]: \"/a/{**}/b\": {**} must be the last segment"},
		{"partial segment operator", allowRule(op(`paths: ["/a/x{*}"]`)), "must be a whole segment"},
		{"glob in the middle", allowRule(op(`paths: ["/a/*/b"]`)), "has a \"*\" in the middle"},
		{"bad port", allowRule(op(`ports: ["http"]`)), `ports[0]: "http" is not a port`},
		{"bad service account", allowRule(src(`service_accounts: [web]`)), "must be NAMESPACE/SERVICE_ACCOUNT"},
		{"empty source", allowRule("{from: [{source: {}}]}"), "from[0].source: is empty"},
		{"bad when cidr", allowRule(when(`{key: source.ip, values: [not-an-ip]}`)), "when[0].values[0]: \"not-an-ip\" is not a CIDR"},
		{"unknown provider", "  policies:\n    - name: x\n      provider: nope\n", `custom provider "nope" is not defined`},
		{"rego without compiler", "  policies:\n    - name: x\n      rego: {files: [/dev/null], query: data.x.allow}\n", "Rego is not available"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig(tc.authz)
			if err == nil {
				_, err = authz.New(cfg, authz.Deps{})
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// TestConcurrentDecide: one Engine serves many goroutines (run with
// -race); each must get its own correct answer.
func TestConcurrentDecide(t *testing.T) {
	e := engine(t, "  policies:\n    - name: d\n      action: DENY\n      rules: [{to: [{operation: {paths: [\"/admin/{**}\"]}}]}]\n    - name: a\n      action: AUDIT\n      rules: [{}]\n    - name: dry\n      dry_run: true\n      rules: [{to: [{operation: {methods: [GET]}}]}]\n")
	done := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range 200 {
				a := base()
				deny := (g+i)%2 == 0
				if deny {
					a.Path = "/admin/x"
				}
				if d := e.Decide(context.Background(), a); d.Allowed == deny {
					done <- errors.New(d.Reason)
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
