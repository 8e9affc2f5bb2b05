package rego_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ztgate/ztgate/authz"
	"github.com/ztgate/ztgate/authz/rego"
	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/e2e/testenv"
)

// attrsFromEnvoy turns an opa-envoy-plugin input document (v2 or v3)
// back into the facts the gateway would have gathered, so the shared
// cases run through Input as real requests would.
func attrsFromEnvoy(t *testing.T, in map[string]any) *authz.Attributes {
	t.Helper()
	get := func(m any, path ...string) any {
		for _, p := range path {
			mm, ok := m.(map[string]any)
			if !ok {
				return nil
			}
			m = mm[p]
		}
		return m
	}
	h := get(in, "attributes", "request", "http")
	a := &authz.Attributes{Headers: map[string][]string{}}
	a.Method, _ = get(h, "method").(string)
	a.Host, _ = get(h, "host").(string)
	a.Protocol, _ = get(h, "protocol").(string)
	a.RequestID, _ = get(h, "id").(string)
	p, _ := get(h, "path").(string)
	a.Path, a.RawQuery, _ = strings.Cut(p, "?")
	if b, ok := get(h, "body").(string); ok {
		a.Body = []byte(b)
	}
	a.BodyTruncated, _ = in["truncated_body"].(bool)
	if hs, ok := get(h, "headers").(map[string]any); ok {
		for k, v := range hs {
			if strings.HasPrefix(k, ":") {
				continue // pseudo-headers are rebuilt from method, path, host
			}
			a.Headers[strings.ToLower(k)] = []string{v.(string)}
		}
	}
	for _, addr := range []any{
		get(in, "attributes", "source", "address", "socketAddress", "address"),
		get(in, "attributes", "source", "address", "Address", "SocketAddress", "address"),
	} {
		if s, ok := addr.(string); ok {
			a.SourceIP, _ = netip.ParseAddr(s) // the primer's "172.17.06" stays invalid, as it is
		}
	}
	return a
}

type sharedCase struct {
	Policy   string `json:"policy"`
	Input    string `json:"input"`
	Query    string `json:"query"`
	Expected any    `json:"expected"`
	Note     string `json:"note"`
}

func TestSharedCases(t *testing.T) {
	raw := readShared(t, "testdata/rego/cases.json")
	var file struct{ Cases []sharedCase }
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Cases) != 53 {
		t.Fatalf("cases.json has %d cases, want 53", len(file.Cases))
	}
	policies := map[string]*rego.Policy{}
	for i, c := range file.Cases {
		t.Run(filepath.Base(c.Policy)+"/"+filepath.Base(c.Input)+"/"+c.Query, func(t *testing.T) {
			key := c.Policy + " " + c.Query
			p := policies[key]
			if p == nil {
				src := readShared(t, "testdata/rego/"+c.Policy)
				var err error
				p, err = rego.NewFromModules(c.Policy, c.Query, map[string]string{c.Policy: string(src)}, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				policies[key] = p
			}
			var in map[string]any
			if err := json.Unmarshal(readShared(t, "testdata/rego/"+c.Input), &in); err != nil {
				t.Fatal(err)
			}
			input := rego.Input(attrsFromEnvoy(t, in))
			got, _, err := p.Eval(context.Background(), input)
			if err != nil {
				t.Fatalf("case %d: %v", i, err)
			}
			if !sameJSON(t, got, c.Expected) {
				t.Errorf("case %d (%s): got %v, want %v", i, c.Note, got, c.Expected)
			}
			// Check builds only the input the policy reads; its result
			// must be the one the whole document gives.
			res, err := p.Check(context.Background(), attrsFromEnvoy(t, in))
			if res.OPA == nil || !sameJSON(t, res.OPA.Result, got) {
				t.Errorf("Check evaluated to %v (err %v), the whole input to %v", res.OPA, err, got)
			}
			if b, ok := c.Expected.(bool); ok {
				if err != nil || res.Allowed != b {
					t.Errorf("Check: allowed=%v err=%v, want %v", res.Allowed, err, b)
				}
			}
		})
	}
}

func sameJSON(t *testing.T, a, b any) bool {
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, _ := json.Marshal(b)
	var va, vb any
	_ = json.Unmarshal(ja, &va)
	_ = json.Unmarshal(jb, &vb)
	return reflect.DeepEqual(va, vb)
}

func TestFailClosed(t *testing.T) {
	for _, tc := range []struct {
		name, file, query string
		timeout           time.Duration
		want              string
	}{
		{"erroring policy", "testdata/error.rego", "data.ztgate.test.error.allow", 5 * time.Second, "conflict"},
		{"looping policy", "testdata/loop.rego", "data.ztgate.test.loop.allow", 50 * time.Millisecond, "deadline"},
		{"undefined result", "testdata/error.rego", "data.ztgate.test.error.nothing", 5 * time.Second, "undefined"},
		{"result of the wrong type", "testdata/object.rego", "data.ztgate.test.object.body", 5 * time.Second, "want a bool"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := rego.New("p", &configs.Rego{Files: []string{tc.file}, Query: tc.query, Timeout: tc.timeout}, 0)
			if err != nil {
				t.Fatal(err)
			}
			a := &authz.Attributes{Method: "GET", Path: "/"}
			res, err := p.Check(context.Background(), a)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			if res.Allowed {
				t.Error("an error must not allow")
			}
			// Through the engine, the error is a 403 deny.
			e := engineWith(t, tc.file, tc.query, tc.timeout)
			d := e.Decide(context.Background(), a)
			if d.Allowed || d.Status != 403 || d.Action != authz.ActionCustom {
				t.Errorf("engine: %+v, want a CUSTOM 403 deny", d)
			}
		})
	}
}

func engineWith(t testing.TB, file, query string, timeout time.Duration) *authz.Engine {
	t.Helper()
	return engineLog(t, file, query, timeout, slog.New(slog.DiscardHandler))
}

func engineLog(t testing.TB, file, query string, timeout time.Duration, log *slog.Logger) *authz.Engine {
	t.Helper()
	abs, _ := filepath.Abs(file)
	cfg, err := configs.Parse("test.yaml", []byte(`
listeners:
  - name: public
    address: "127.0.0.1:0"
    tls: { names: [localhost] }
routes:
  - name: r
    direct_response: { status: 200 }
authz:
  decision_log: { rego_input: true }
  policies:
    - name: opa
      rego: { files: [`+abs+`], query: `+query+`, timeout: `+timeout.String()+` }
`), os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	e, err := authz.New(cfg, authz.Deps{Rego: rego.Compiler, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestObjectResult(t *testing.T) {
	var buf bytes.Buffer
	e := engineLog(t, "testdata/object.rego", "data.ztgate.test.object.decision", time.Second, slog.New(slog.NewJSONHandler(&buf, nil)))
	admin := &authz.Attributes{Method: "GET", Path: "/x", RequestPrincipal: "iss/alice", Claims: map[string]any{"groups": []any{"admins"}},
		Headers: map[string][]string{"authorization": {"Bearer SECRET"}}}
	d := e.Decide(context.Background(), admin)
	if !d.Allowed || len(d.UpstreamHeaders) != 1 || d.UpstreamHeaders[0] != (authz.Header{Name: "x-user", Value: "iss/alice"}) ||
		len(d.ResponseHeaders) != 1 || d.ResponseHeaders[0].Name != "x-checked-by" {
		t.Errorf("admin: %+v", d)
	}
	anon := &authz.Attributes{Method: "GET", Path: "/x"}
	d = e.Decide(context.Background(), anon)
	if d.Allowed || d.Status != 401 || d.Body != "login first" {
		t.Errorf("anonymous: %+v, want 401 with the policy's body", d)
	}
	// Both evaluations logged in OPA's layout; the denied one at info.
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not JSON: %s", line)
		}
		if rec["msg"] != authz.LogMsgOPA {
			continue
		}
		found = true
		for _, k := range []string{"decision_id", "path", "input", "result", "metrics"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("OPA record lacks %q: %s", k, line)
			}
		}
		if rec["path"] != "ztgate/test/object/decision" {
			t.Errorf("path = %v", rec["path"])
		}
		// The logged input is the whole document, not the part the
		// policy reads.
		if in, _ := rec["input"].(map[string]any); in["version"] == nil || in["attributes"] == nil {
			t.Errorf("logged input = %v, want the whole document", rec["input"])
		}
		// Made only when the record is written, but always there.
		if id, _ := rec["decision_id"].(string); len(id) != 36 {
			t.Errorf("decision_id = %v, want a UUID", rec["decision_id"])
		}
		if m, _ := rec["metrics"].(map[string]any); m["timer_rego_query_eval_ns"] == nil {
			t.Errorf("metrics = %v, want timer_rego_query_eval_ns", rec["metrics"])
		}
	}
	if !found {
		t.Errorf("no OPA decision record in:\n%s", buf.String())
	}
	if strings.Contains(buf.String(), "SECRET") {
		t.Error("the authorization header leaked into the log")
	}
}

func TestInterpret(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
		ok   bool
	}{
		{"true", true, true},
		{"false", false, true},
		{"object", map[string]any{"allowed": true, "http_status": json.Number("200")}, true},
		{"object without allowed", map[string]any{"allow": true}, false},
		{"bad status", map[string]any{"allowed": false, "http_status": json.Number("42")}, false},
		{"bad headers", map[string]any{"allowed": true, "headers": "x"}, false},
		{"bad body", map[string]any{"allowed": true, "body": json.Number("1")}, false},
		{"string", "yes", false},
		{"set", []any{true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rego.Interpret(tc.v)
			if (err == nil) != tc.ok {
				t.Errorf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestInputShape(t *testing.T) {
	a := &authz.Attributes{
		Method: "POST", Path: "/people/a%20b", RawQuery: "lang=en&id=1&id=2", Host: "api:8443",
		SourceIP: netip.MustParseAddr("10.0.0.9"), SourcePort: 5555, DestinationPort: 8443,
		Peer:    authz.PeerFromSPIFFEID("spiffe://example.org/ns/prod/sa/web"),
		Headers: map[string][]string{"content-type": {"application/json"}, "x-multi": {"a", "b"}},
		Body:    []byte(`{"n": 1}`),
	}
	in := rego.Input(a)
	b, _ := json.Marshal(in)
	for _, want := range []string{
		`"parsed_path":["people","a b"]`, `"parsed_query":{`, `"id":["1","2"]`, `"path":"/people/a%20b?lang=en\u0026id=1\u0026id=2"`,
		`"socketAddress":{"address":"10.0.0.9","portValue":5555}`, `"principal":"spiffe://example.org/ns/prod/sa/web"`,
		`"x-multi":"a,b"`, `"parsed_body":{"n":1}`, `"namespace":"prod"`,
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("input lacks %s:\n%s", want, b)
		}
	}
}

func TestBadPolicyIsALoadError(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "bad.rego")
	if err := os.WriteFile(f, []byte("package x\nallow if {"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := rego.New("bad", &configs.Rego{Files: []string{f}, Query: "data.x.allow"}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "bad.rego") {
		t.Fatalf("err = %v, want a parse error naming the file", err)
	}
	if errors.Is(err, rego.ErrUndefined) {
		t.Fatal("wrong error")
	}
}

func readShared(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(testenv.Shared(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInputValueMatchesInput(t *testing.T) {
	for _, a := range []*authz.Attributes{
		{},
		{Method: "POST", Path: "/people/a%20b", RawQuery: "lang=en&id=1&id=2", Host: "api:8443", Protocol: "HTTP/2.0", RequestID: "r",
			SourceIP: netip.MustParseAddr("2001:db8::9"), SourcePort: 5555, DestinationPort: 8443,
			Peer:             authz.PeerFromSPIFFEID("spiffe://example.org/ns/prod/sa/web"),
			RequestPrincipal: "iss/sub", Claims: map[string]any{"groups": []any{"a", "b"}, "n": json.Number("3"), "x": map[string]any{"y": true}},
			Headers: map[string][]string{"content-type": {"application/json"}, "x-multi": {"a", "b"}},
			Body:    []byte(`{"n": 1, "s": ["x"]}`)},
	} {
		if err := rego.CheckInputValue(a); err != nil {
			t.Error(err)
		}
	}
}

// TestDeadlineFromCaller: the caller's context ends the evaluation too,
// cancelled or with an earlier deadline than the policy's, and either
// way the request is denied.
func TestDeadlineFromCaller(t *testing.T) {
	p, err := rego.New("p", &configs.Rego{Files: []string{"testdata/loop.rego"}, Query: "data.ztgate.test.loop.allow", Timeout: time.Hour}, 0)
	if err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	past, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for name, ctx := range map[string]context.Context{"cancelled": cancelled, "past deadline": past} {
		t.Run(name, func(t *testing.T) {
			res, err := p.Check(ctx, &authz.Attributes{Method: "GET", Path: "/"})
			if err == nil || res.Allowed {
				t.Fatalf("allowed=%v err=%v, want an error", res.Allowed, err)
			}
			if res.OPA == nil || res.OPA.Error == "" {
				t.Errorf("the OPA record lacks the error: %+v", res.OPA)
			}
		})
	}
}

// TestBlockingBuiltinDeadline: a policy that waits on http.send is
// evaluated under a context deadline, so a server that never answers
// still ends in a deny when the policy's time is up.
func TestBlockingBuiltinDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	f := filepath.Join(t.TempDir(), "send.rego")
	src := "package ztgate.test.send\n\nallow if http.send({\"method\": \"GET\", \"url\": \"" + srv.URL + "\"}).status_code == 200\n"
	if err := os.WriteFile(f, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := rego.New("send", &configs.Rego{Files: []string{f}, Query: "data.ztgate.test.send.allow", Timeout: 100 * time.Millisecond}, 0)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Check(context.Background(), &authz.Attributes{Method: "GET", Path: "/"})
	if err == nil || res.Allowed {
		t.Fatalf("allowed=%v err=%v, want a deadline error", res.Allowed, err)
	}
	if !strings.Contains(err.Error(), "deadline") {
		t.Errorf("err = %v, want it to mention the deadline", err)
	}
}

// TestClaimsMemo: with a memo (a cached token), the converted claims
// are kept there, shared by policies that read the same claims, and a
// policy that reads other claims gets its own entry; the decisions are
// those without a memo.
func TestClaimsMemo(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) *rego.Policy {
		f := filepath.Join(dir, name+".rego")
		if err := os.WriteFile(f, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := rego.New(name, &configs.Rego{Files: []string{f}, Query: "data." + name + ".allow"}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	scope1 := write("scope1", "package scope1\n\nallow if \"read\" in split(input.jwt.claims.scope, \" \")\n")
	scope2 := write("scope2", "package scope2\n\nallow if startswith(input.jwt.claims.scope, \"read\")\n")
	groups := write("groups", "package groups\n\ndefault allow := false\n\nallow if \"admins\" in input.jwt.claims.groups\n")
	all := write("all", "package all\n\nallow if count(input.jwt.claims) == 2\n")

	claims := map[string]any{"scope": "read write", "groups": []any{"users"}}
	memo := new(sync.Map)
	for _, withMemo := range []bool{false, true, true} {
		a := &authz.Attributes{Method: "GET", Path: "/", Claims: claims}
		if withMemo {
			a.ClaimsMemo = memo
		}
		for p, want := range map[*rego.Policy]bool{scope1: true, scope2: true, groups: false, all: true} {
			res, err := p.Check(context.Background(), a)
			if err != nil || res.Allowed != want {
				t.Errorf("memo=%v: allowed=%v err=%v, want %v", withMemo, res.Allowed, err, want)
			}
		}
	}
	n := 0
	memo.Range(func(k, v any) bool { n++; return true })
	if n != 3 { // {"claims":{"scope":*}} (shared by two policies), {"claims":{"groups":*}}, {"claims":*}
		t.Errorf("memo has %d entries, want 3", n)
	}
}
