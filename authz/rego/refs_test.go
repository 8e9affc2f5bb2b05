package rego

import (
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestAnalyze: the part of the input a policy can read, spelled by
// need.String ("*" is a whole subtree), and whether it blocks on I/O.
// Every way of seeing input as a whole must give "*".
func TestAnalyze(t *testing.T) {
	for _, tc := range []struct {
		name, src, query string
		want             string
		blocking         bool
	}{
		{"no input", `allow if 1 == 1`, "data.p.allow", `{}`, false},
		{"dotted paths", `allow if {
			input.attributes.request.http.method == "GET"
			startswith(input.attributes.request.http.path, "/api")
		}`, "data.p.allow", `{"attributes":{"request":{"http":{"method":*,"path":*}}}}`, false},
		{"variable key stops the prefix", `allow if input.attributes.request.http.headers[k] == "x"`, "data.p.allow",
			`{"attributes":{"request":{"http":{"headers":*}}}}`, false},
		{"number index stops the prefix", `allow if input.parsed_path[0] == "api"`, "data.p.allow", `{"parsed_path":*}`, false},
		{"bracket string is a key", `allow if input["request_principal"] == "x"`, "data.p.allow", `{"request_principal":*}`, false},
		{"prefix covers longer refs", `allow if {
			input.jwt.claims.scope == "a"
			count(input.jwt) > 0
		}`, "data.p.allow", `{"jwt":*}`, false},
		{"bare input", `allow if count(input) > 0`, "data.p.allow", `*`, false},
		{"input as a value", `x := input
		allow if x.a == 1`, "data.p.allow", `*`, false},
		{"input with a variable key", `allow if input[k] == 1`, "data.p.allow", `*`, false},
		{"walk over input", `allow if walk(input, [p, v])`, "data.p.allow", `*`, false},
		{"some in", `allow if { some h in input.attributes.request.http.headers; h == "x" }`, "data.p.allow",
			`{"attributes":{"request":{"http":{"headers":*}}}}`, false},
		{"every", `allow if { every s in input.parsed_path { s != "" } }`, "data.p.allow", `{"parsed_path":*}`, false},
		{"comprehension", `names := [n | some n, _ in input.peer]
		allow if count(names) > 0`, "data.p.allow", `{"peer":*}`, false},
		{"function argument", `f(x) := x.b
		allow if f(input.a) == 1`, "data.p.allow", `{"a":*}`, false},
		{"nested in a data key", `allow if data.p.m[input.peer.namespace]
		m := {"x": true}`, "data.p.allow", `{"peer":{"namespace":*}}`, false},
		{"rule head", `v := input.request_principal`, "data.p.v", `{"request_principal":*}`, false},
		{"else branch", `default v := 0
		v := 1 if input.a == 1
		else := 2 if input.b == 2`, "data.p.v", `{"a":*,"b":*}`, false},
		{"import of a subtree", `import input.attributes.request.http as req
		allow if req.method == "GET"`, "data.p.allow", `{"attributes":{"request":{"http":*}}}`, false},
		{"import of input", `import input
		allow if input.a == 1`, "data.p.allow", `*`, false},
		{"with input", `q if input.a == 1
		allow if q with input as {"a": 1}`, "data.p.allow", `*`, false},
		{"with a subtree", `q if input.a.b == 1
		allow if q with input.a as {"b": 1}`, "data.p.allow", `{"a":*}`, false},
		{"query reads input", `allow := true`, "data.p.allow; input.x == 1", `{"x":*}`, false},
		{"template string", `allow if $"{input.peer.principal}" == "x"`, "data.p.allow", `{"peer":{"principal":*}}`, false},
		{"http.send blocks", `allow if http.send({"method": "GET", "url": "http://127.0.0.1:1"}).status_code == 200`, "data.p.allow", `{}`, true},
		{"net.lookup_ip_addr blocks", `allow if count(net.lookup_ip_addr("localhost")) > 0`, "data.p.allow", `{}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ast.ParseModuleWithOpts("p.rego", "package p\n"+tc.src, ast.ParserOptions{RegoVersion: ast.RegoV1})
			if err != nil {
				t.Fatal(err)
			}
			q, err := ast.ParseBody(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			got := analyze(map[string]*ast.Module{"p.rego": m}, q)
			if s := got.input.String(); s != tc.want {
				t.Errorf("input need = %s, want %s", s, tc.want)
			}
			if got.blocking != tc.blocking {
				t.Errorf("blocking = %v, want %v", got.blocking, tc.blocking)
			}
		})
	}
}

// TestNeedAdd: a whole subtree absorbs longer paths added before or
// after it, and needAll is never written.
func TestNeedAdd(t *testing.T) {
	n := &need{}
	n.add([]string{"a", "b", "c"})
	n.add([]string{"a", "b"})
	n.add([]string{"a", "b", "d"})
	n.add([]string{"x"})
	if s := n.String(); s != `{"a":{"b":*},"x":*}` {
		t.Errorf("need = %s", s)
	}
	needAll.add([]string{"a"})
	if !needAll.all || needAll.kids != nil {
		t.Error("needAll was changed")
	}
	if (*need)(nil).child("a") != nil || needAll.child("a") != needAll {
		t.Error("child of nil / all")
	}
}
