package authz_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/authz"
	"github.com/ztgate/ztgate/configs"
)

const checkConfig = `
listeners:
  - name: public
    address: "127.0.0.1:8443"
    tls: { names: [localhost] }
routes:
  - name: details
    match: { path_prefix: /details }
    direct_response: { status: 200 }
    policies: [block-admin]
  - name: details-admin-exact
    match: { path: /details/admin, methods: [DELETE] }
    direct_response: { status: 200 }
  - name: default
    direct_response: { status: 200 }
authz:
  policies:
    - name: block-admin
      action: DENY
      rules: [{to: [{operation: {paths: ["/details/admin/{**}"]}}]}]
    - name: mesh-only
      rules:
        - from: [{source: {principals: ["cluster.local/ns/default/*"]}}]
        - from: [{source: {request_principals: ["*"]}}]
`

func TestPolicyCheck(t *testing.T) {
	cfg, err := configs.Parse("check.yaml", []byte(checkConfig), os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	verify := func(ctx context.Context, route string, h map[string][]string) (*authz.JWTIdentity, error) {
		switch strings.Join(h["authorization"], "") {
		case "":
			return nil, nil
		case "Bearer good":
			return &authz.JWTIdentity{Principal: "iss/alice", Claims: map[string]any{"sub": "alice"}}, nil
		}
		return nil, errors.New("signature invalid")
	}
	for _, tc := range []struct {
		name  string
		req   authz.CheckRequest
		allow bool
		out   []string
	}{
		{"peer allowed", authz.CheckRequest{Path: "/details/1", Peer: "spiffe://cluster.local/ns/default/sa/web"}, true,
			[]string{`route="details"`, `port=8443`, `ALLOW`, `mesh-only`, "rule 0"}},
		{"deny on one path", authz.CheckRequest{Path: "/details/admin/x", Peer: "spiffe://cluster.local/ns/default/sa/web"}, false,
			[]string{"DENY", `block-admin`, `DENY policy "block-admin" rule 0 matched`}},
		{"other route not blocked", authz.CheckRequest{Method: "delete", Path: "/details/admin", Peer: "spiffe://cluster.local/ns/default/sa/web"}, true,
			[]string{`route="details-admin-exact"`}},
		{"anonymous denied with why", authz.CheckRequest{Path: "/x"}, false,
			[]string{`route="default"`, "no ALLOW policy matched", `rule 0 did not match: from: principals in [cluster.local/ns/default/*]`, "rule 1 did not match: from: request_principals in [*]"}},
		{"valid token", authz.CheckRequest{Path: "/x", Headers: []string{"Authorization: Bearer good"}}, true, []string{"request principal iss/alice", "rule 1"}},
		{"bad token is a 401", authz.CheckRequest{Path: "/x", Headers: []string{"Authorization: Bearer bad"}}, false, []string{"status 401", "signature invalid"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			ok, err := authz.Check(context.Background(), cfg, authz.Deps{}, tc.req, verify, &out)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.allow {
				t.Errorf("allowed = %v, want %v\n%s", ok, tc.allow, out.String())
			}
			for _, w := range tc.out {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
	for _, bad := range []authz.CheckRequest{{Path: "x"}, {Source: "nope"}, {Peer: "http://x"}, {Headers: []string{"novalue"}}, {Route: "missing"}} {
		if _, err := authz.Check(context.Background(), cfg, authz.Deps{}, bad, nil, &bytes.Buffer{}); err == nil {
			t.Errorf("%+v: want an error", bad)
		}
	}
}
