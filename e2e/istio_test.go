package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/e2e/testenv"
)

// istioConfig is Istio's RequestAuthentication walkthrough moved to
// ztgate: a JWT provider for testing@secure.istio.io in front of
// `details`, plus the policies the step adds.
func istioConfig(upstreamAddr, jwks, step string) func(g *gw) string {
	return func(g *gw) string {
		policies, routePolicies := "", ""
		switch step {
		case "require-jwt":
			routePolicies = "policies: [require-jwt]"
			policies = `
authz:
  policies:
    - name: require-jwt
      action: ALLOW
      rules:
        - from: [{ source: { request_principals: ["testing@secure.istio.io/*"] } }]`
		case "deny-path":
			routePolicies = "policies: [require-jwt, deny-secret]"
			policies = `
authz:
  policies:
    - name: require-jwt
      action: ALLOW
      rules:
        - from: [{ source: { request_principals: ["testing@secure.istio.io/*"] } }]
    - name: deny-secret
      action: DENY
      rules:
        - to: [{ operation: { paths: ["/details/secret", "/details/secret/*"] } }]`
		}
		return fmt.Sprintf(`
storage: %s/state
admin: { address: "127.0.0.1:%d" }
listeners:
  - name: public
    address: "127.0.0.1:%d"
    protocols: [h1, h2]
    tls: { names: [localhost] }
upstreams:
  - name: details
    endpoints: ["%s"]
routes:
  - name: details
    match: { path_prefix: /details }
    upstream: details
    %s
authn:
  jwt:
    - issuer: testing@secure.istio.io
      jwks_file: %s
%s
`, g.dir, g.admin, g.port, upstreamAddr, routePolicies, jwks, policies)
	}
}

// curlStatus runs curl and returns the status code, the headers and the body.
func curlStatus(t *testing.T, g *gw, path string, headers ...string) (int, string, string) {
	t.Helper()
	args := []string{"-sS", "--cacert", g.caFile(), "-D", "-", "-o", "-", "-w", "\n%{http_code}"}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	args = append(args, g.url(path))
	out, err := exec.Command(testenv.Tool(t, "curl"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", path, err, out)
	}
	s := strings.TrimSpace(string(out))
	i := strings.LastIndexByte(s, '\n')
	var code int
	fmt.Sscan(s[i+1:], &code)
	head, body, _ := strings.Cut(s[:i], "\r\n\r\n")
	return code, head, body
}

func TestIstioWalkthrough(t *testing.T) {
	jwks := testenv.Shared(t, "testdata/jwt/jwks.json")
	raw, err := os.ReadFile(testenv.Shared(t, "testdata/jwt/demo.jwt"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))
	parts := strings.Split(token, ".")
	sig := []byte(parts[2])
	sig[len(sig)/2] ^= 1 // flip a bit in the signature
	tampered := parts[0] + "." + parts[1] + "." + string(sig)
	bearer := func(tok string) string { return "Authorization: Bearer " + tok }

	up, _, _ := echoUpstream(t)
	g := startGW(t, istioConfig(up, jwks, "authn-only"))

	// Step 1, RequestAuthentication only: a bad token is 401, no token
	// passes (authorization decides, and nothing requires a principal).
	if code, head, _ := curlStatus(t, g, "/details/1", bearer(tampered)); code != 401 ||
		!strings.Contains(head, `Bearer error="invalid_token"`) {
		t.Fatalf("tampered token: %d\n%s", code, head)
	}
	if code, _, _ := curlStatus(t, g, "/details/1"); code != 200 {
		t.Fatalf("no token with authn only: %d", code)
	}
	if code, _, _ := curlStatus(t, g, "/details/1", bearer(token)); code != 200 {
		t.Fatalf("valid token: %d", code)
	}
	if strings.Contains(g.logs.String(), parts[2]) {
		t.Fatal("the access log contains the token")
	}

	// Step 2, require-JWT by SIGHUP: no token is now 403 with a JSON
	// body carrying the request id; the valid token still passes.
	g.write(istioConfig(up, jwks, "require-jwt")(g))
	g.reload("success")
	code, head, body := curlStatus(t, g, "/details/1")
	var deny struct {
		Status    int    `json:"status"`
		RequestID string `json:"request_id"`
	}
	if code != 403 || json.Unmarshal([]byte(body), &deny) != nil || deny.RequestID == "" ||
		!strings.Contains(strings.ToLower(head), strings.ToLower("X-Request-Id: "+deny.RequestID)) {
		t.Fatalf("no token with require-jwt: %d %s\n%s", code, body, head)
	}
	if code, _, _ := curlStatus(t, g, "/details/1", bearer(token)); code != 200 {
		t.Fatalf("valid token with require-jwt: %d", code)
	}
	if code, _, _ := curlStatus(t, g, "/details/1", bearer(tampered)); code != 401 {
		t.Fatalf("bad token with require-jwt: %d", code)
	}

	// Step 3, incident response: DENY one path by SIGHUP, without a
	// restart. That path is 403, the rest still 200.
	g.write(istioConfig(up, jwks, "deny-path")(g))
	g.reload("success")
	if code, _, _ := curlStatus(t, g, "/details/secret", bearer(token)); code != 403 {
		t.Fatalf("denied path: %d", code)
	}
	if code, _, _ := curlStatus(t, g, "/details//secret", bearer(token)); code != 403 {
		t.Fatalf("denied path with a doubled slash: %d", code)
	}
	if code, _, _ := curlStatus(t, g, "/details/1", bearer(token)); code != 200 {
		t.Fatalf("other path after the DENY: %d", code)
	}
	for _, want := range []string{`"decision":"deny","policy":"deny-secret"`, `"request_principal":"testing@secure.istio.io/testing@secure.istio.io"`, `"reason":"jwt_`} {
		if !g.waitLog(regexp.QuoteMeta(want)) {
			t.Fatalf("access log lacks %s", want)
		}
	}
}
