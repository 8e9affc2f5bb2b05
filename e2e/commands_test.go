package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/e2e/testenv"
)

// TestPolicyCheckCommand: `ztgate policy check` decides offline from the
// real compiled config: exit 0 for allow, 1 for deny, and it says which
// policy and rule decided.
func TestPolicyCheckCommand(t *testing.T) {
	jwks := testenv.Shared(t, "testdata/jwt/jwks.json")
	raw, err := os.ReadFile(testenv.Shared(t, "testdata/jwt/demo.jwt"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))
	dir := t.TempDir()
	conf := filepath.Join(dir, "ztgate.yaml")
	os.WriteFile(conf, []byte(`
storage: `+dir+`
listeners: [{ name: public, address: "127.0.0.1:0", tls: { names: [localhost] } }]
upstreams: [{ name: details, endpoints: ["127.0.0.1:9"] }]
routes:
  - { name: details, match: { path_prefix: /details }, upstream: details, policies: [require-jwt, deny-secret] }
authn:
  jwt: [{ issuer: testing@secure.istio.io, jwks_file: `+jwks+` }]
authz:
  policies:
    - name: require-jwt
      action: ALLOW
      rules: [{ from: [{ source: { request_principals: ["testing@secure.istio.io/*"] } }] }]
    - name: deny-secret
      action: DENY
      rules: [{ to: [{ operation: { paths: ["/details/secret"] } }] }]
`), 0o644)
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"token allowed", []string{"--path", "/details/1", "--header", "Authorization: Bearer " + token}, 0, `ALLOW policy "require-jwt" rule 0 matched`},
		{"deny wins", []string{"--path", "/details/secret", "--header", "Authorization: Bearer " + token}, 1, `DENY policy "deny-secret" rule 0 matched`},
		{"path normalised as the gateway does", []string{"--path", "/details//secret", "--header", "Authorization: Bearer " + token}, 1, `DENY policy "deny-secret" rule 0 matched`},
		{"encoded slash refused as the gateway does", []string{"--path", "/details%2Fsecret", "--header", "Authorization: Bearer " + token}, 1, "status 400"},
		{"no token", []string{"--path", "/details/1"}, 1, "no ALLOW policy matched"},
		{"bad token", []string{"--path", "/details/1", "--header", "Authorization: Bearer " + token + "x"}, 1, "token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(ztgateBin, append([]string{"policy", "check", "-c", conf}, tc.args...)...).CombinedOutput()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(string(out), tc.want) {
				t.Fatalf("exit %d (want %d), output lacks %q:\n%s", code, tc.code, tc.want, out)
			}
		})
	}
}

// TestAccelBenchCommand: `ztgate accel bench` prints its table for the
// go provider (a short run).
func TestAccelBenchCommand(t *testing.T) {
	out, err := exec.Command(ztgateBin, "accel", "bench", "--providers", "go", "--keys", "ecdsa_p256",
		"--sign-duration", "200ms", "--handshake-duration", "300ms", "--no-resumption").CombinedOutput()
	if err != nil {
		t.Fatalf("accel bench: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "ecdsa_p256") || !strings.Contains(string(out), "go") {
		t.Fatalf("accel bench output:\n%s", out)
	}
}
