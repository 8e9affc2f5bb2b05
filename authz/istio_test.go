package authz_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/authz"
	"github.com/ztgate/ztgate/authz/istio"
	"github.com/ztgate/ztgate/configs"
)

func istioConfig(t *testing.T, dir string) (*configs.Config, error) {
	t.Helper()
	return configs.Parse("test.yaml", []byte(`
listeners:
  - name: public
    address: "127.0.0.1:0"
    tls: { names: [localhost] }
routes:
  - name: httpbin
    direct_response: { status: 200 }
    labels: { app: httpbin }
  - name: other
    direct_response: { status: 200 }
authz:
  policies_dir: `+dir+`
`), os.Environ())
}

// TestIstioDocuments loads Istio's own AuthorizationPolicy YAML and
// checks the walkthrough's behaviour through the engine.
func TestIstioDocuments(t *testing.T) {
	cfg, err := istioConfig(t, "istio/testdata/good")
	if err != nil {
		t.Fatal(err)
	}
	e, err := authz.New(cfg, authz.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	const principal = "testing@secure.istio.io/testing@secure.istio.io"
	for _, tc := range []struct {
		name   string
		a      authz.Attributes
		allow  bool
		policy string
	}{
		{"no token is denied", authz.Attributes{Route: "httpbin", Path: "/ip", Method: "GET"}, false, ""},
		{"health without token", authz.Attributes{Route: "httpbin", Path: "/healthz", Method: "GET"}, true, "require-jwt"},
		{"token allows", authz.Attributes{Route: "httpbin", Path: "/ip", RequestPrincipal: principal}, true, "require-jwt"},
		{"headers need group1", authz.Attributes{Route: "httpbin", Path: "/headers", RequestPrincipal: principal, Claims: map[string]any{"groups": []any{"group2"}}}, false, "deny-headers-without-group"},
		{"headers with group1", authz.Attributes{Route: "httpbin", Path: "/headers", RequestPrincipal: principal, Claims: map[string]any{"groups": []any{"group1", "group2"}}}, true, "require-jwt"},
		{"selector leaves other routes alone", authz.Attributes{Route: "other", Path: "/ip"}, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := e.Decide(context.Background(), &tc.a)
			if d.Allowed != tc.allow || d.Policy != tc.policy {
				t.Errorf("got %v by %q (%s), want %v by %q", d.Allowed, d.Policy, d.Reason, tc.allow, tc.policy)
			}
		})
	}
	a := &authz.Attributes{Route: "other", Method: "DELETE", Path: "/admin/x", RemoteIP: mustAddr("192.0.2.1")}
	d := e.Decide(context.Background(), a)
	if !d.Allowed || len(d.Audit) != 1 || d.DryRun == nil || d.DryRun.Allowed || d.DryRun.Policy != "would-deny-delete" {
		t.Errorf("AUDIT and dry-run from annotations: %+v %+v", d, d.DryRun)
	}
}

// TestIstioBadDocuments: each file in istio/testdata/bad starts with
// "# want: <error text>", the error its load must produce.
func TestIstioBadDocuments(t *testing.T) {
	files, _ := filepath.Glob("istio/testdata/bad/*.yaml")
	if len(files) < 10 {
		t.Fatalf("only %d bad documents", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := bufio.NewReader(bytes.NewReader(data)).ReadLine()
			want, ok := strings.CutPrefix(string(first), "# want: ")
			if !ok {
				t.Fatalf("%s does not start with # want:", f)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), data, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := istioConfig(t, dir)
			if err == nil {
				_, err = authz.New(cfg, authz.Deps{})
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error = %v\nwant it to contain %q", err, want)
			}
			if !strings.Contains(err.Error(), filepath.Base(f)) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestIstioNameClash(t *testing.T) {
	dir := t.TempDir()
	doc := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: same}\nspec: {rules: [{}]}\n"
	if err := os.WriteFile(filepath.Join(dir, "a.yaml"), []byte(doc+"---\n"+doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := istioConfig(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := authz.New(cfg, authz.Deps{}); err == nil || !strings.Contains(err.Error(), `policy "same" is already defined`) {
		t.Fatalf("err = %v", err)
	}
}

// TestIstioRequestAuthentication: RequestAuthentication documents merge
// into authn.jwt (MergeAuthn) and the policy loader then skips them.
func TestIstioRequestAuthentication(t *testing.T) {
	const ra = `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "https://idp.example/jwks.json"
    forwardOriginalToken: true
    outputClaimToHeaders:
    - header: x-jwt-sub
      claim: sub
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
spec:
  selector:
    matchLabels:
      app: httpbin
  rules:
  - from:
    - source:
        requestPrincipals: ["testing@secure.istio.io/*"]
`
	for _, tc := range []struct{ name, doc, want string }{
		{"merged", ra, ""},
		{"selector matches no route", strings.Replace(ra, "app: httpbin\n  jwtRules", "app: nothing\n  jwtRules", 1), "selects no route"},
		{"unsupported field", strings.Replace(ra, "forwardOriginalToken: true", "outputPayloadToHeader: x-payload", 1), "outputPayloadToHeader: is not supported"},
		{"unknown field", strings.Replace(ra, "forwardOriginalToken: true", "forwardOriginalTokn: true", 1), "field forwardOriginalTokn not found"},
		{"invalid for authn", strings.Replace(ra, "https://idp.example/jwks.json", "http://idp.example/jwks.json", 1), "is not an https:// URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "httpbin.yaml"), []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := istioConfig(t, dir)
			if err != nil {
				t.Fatal(err)
			}
			// Without the merge, the document is refused, not ignored.
			if _, err := authz.New(cfg, authz.Deps{}); err == nil || !strings.Contains(err.Error(), "RequestAuthentication is not loaded") {
				t.Fatalf("unmerged: err = %v", err)
			}
			err = istio.MergeAuthn(cfg)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Authn.JWT) != 1 {
				t.Fatalf("authn.jwt = %+v", cfg.Authn.JWT)
			}
			p := cfg.Authn.JWT[0]
			if p.Name != "jwt-example" || p.Issuer != "testing@secure.istio.io" || len(p.Routes) != 1 || p.Routes[0] != "httpbin" ||
				!p.ForwardOriginalToken || len(p.OutputClaimToHeaders) != 1 || len(p.FromHeaders) != 1 || p.MaxTokenBytes == 0 {
				t.Errorf("translated provider: %+v", p)
			}
			e, err := authz.New(cfg, authz.Deps{})
			if err != nil {
				t.Fatalf("merged: %v", err)
			}
			if got := e.Policies(); len(got) != 1 || got[0] != "require-jwt" {
				t.Errorf("policies = %v", got)
			}
		})
	}
}

func TestIstioPeerAuthentication(t *testing.T) {
	const pa = `apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: strict
spec:
  SELECTOR
  mtls:
    mode: STRICT
`
	withSel := strings.Replace(pa, "SELECTOR", "selector: {matchLabels: {app: httpbin}}", 1)
	noSel := strings.Replace(pa, "SELECTOR", "", 1)
	for _, tc := range []struct {
		name, doc, bundle, routeMode, want string
		check                              func(t *testing.T, cfg *configs.Config)
	}{
		{"selector sets the route", withSel, "", "", "", func(t *testing.T, cfg *configs.Config) {
			if cfg.Routes[0].PeerAuthentication != "STRICT" || cfg.Routes[1].PeerAuthentication != "" {
				t.Errorf("routes: %q %q", cfg.Routes[0].PeerAuthentication, cfg.Routes[1].PeerAuthentication)
			}
		}},
		{"no selector sets the listeners", noSel, "bundle", "", "", func(t *testing.T, cfg *configs.Config) {
			if cfg.Listeners[0].PeerAuthentication.Mode != "STRICT" {
				t.Errorf("listener mode %q", cfg.Listeners[0].PeerAuthentication.Mode)
			}
		}},
		{"STRICT needs trust bundles", noSel, "", "", "trust_bundles: is required for mode STRICT", nil},
		{"conflict with the main file", withSel, "", "PERMISSIVE", "conflicts with routes[0].peer_authentication PERMISSIVE", nil},
		{"port level refused", strings.Replace(noSel, "mtls:", "portLevelMtls: {8080: {mode: DISABLE}}\n  mtls:", 1), "", "", "spec.portLevelMtls: is not supported", nil},
		{"bad mode", strings.Replace(withSel, "STRICT", "MUTUAL", 1), "", "", `"MUTUAL" is not valid`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pd := filepath.Join(dir, "policies.d")
			if err := os.Mkdir(pd, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(pd, "pa.yaml"), []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			bundles := ""
			if tc.bundle != "" {
				b := filepath.Join(dir, "bundle.pem")
				if err := os.WriteFile(b, []byte("placeholder\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				bundles = "peer_authentication: {trust_bundles: [{trust_domain: cluster.local, file: " + b + "}]}"
			}
			routeMode := ""
			if tc.routeMode != "" {
				routeMode = "peer_authentication: " + tc.routeMode
			}
			cfg, err := configs.Parse("test.yaml", []byte(`
listeners:
  - name: public
    address: "127.0.0.1:0"
    tls: { names: [localhost] }
    `+bundles+`
routes:
  - name: httpbin
    direct_response: { status: 200 }
    labels: { app: httpbin }
    `+routeMode+`
  - name: other
    direct_response: { status: 200 }
authz:
  policies_dir: `+pd+`
`), os.Environ())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := authz.New(cfg, authz.Deps{}); err == nil || !strings.Contains(err.Error(), "PeerAuthentication is not loaded") {
				t.Fatalf("unmerged: err = %v", err)
			}
			err = istio.MergeAuthn(cfg)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cfg)
			if _, err := authz.New(cfg, authz.Deps{}); err != nil {
				t.Fatalf("merged: %v", err)
			}
		})
	}
}
