package e2e

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/e2e/testenv"
)

// TestTestSSL runs testssl.sh against a listener: only TLS 1.2 and 1.3,
// no weak cipher class, h2 by ALPN.
func TestTestSSL(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: testssl.sh takes about 30 s")
	}
	testssl := testenv.Tool(t, "testssl")
	up, _, _ := echoUpstream(t)
	g := startGW(t, baseConfig(up, "ok"))
	out := filepath.Join(t.TempDir(), "testssl.json")
	cmd := exec.Command(testssl, "--quiet", "--color", "0", "--warnings", "off", "-p", "-s",
		"--jsonfile", out, fmt.Sprintf("127.0.0.1:%d", g.port))
	// testssl exits non-zero when it has findings; the JSON is the verdict.
	log, _ := cmd.CombinedOutput()
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("testssl wrote no JSON: %v\n%s", err, log)
	}
	var findings []struct{ ID, Severity, Finding string }
	if err := json.Unmarshal(data, &findings); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range findings {
		got[f.ID] = f.Finding
	}
	want := map[string]string{
		"SSLv2": "not offered", "SSLv3": "not offered", "TLS1": "not offered", "TLS1_1": "not offered",
		"TLS1_2": "offered", "TLS1_3": "offered with final", "ALPN_HTTP2": "h2",
		"cipherlist_NULL": "not offered", "cipherlist_aNULL": "not offered", "cipherlist_EXPORT": "not offered",
		"cipherlist_LOW": "not offered", "cipherlist_3DES_IDEA": "not offered", "cipherlist_AVERAGE": "not offered",
		"cipherlist_STRONG": "offered",
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("testssl %s: %q, want %q", id, got[id], w)
		}
	}
}

// knownH2specFailures are the h2spec cases Go's net/http HTTP/2 server
// (which ztgate uses, as Caddy does) does not pass. Each is a protocol
// error answered less strictly than RFC 9113 asks. A new failure outside
// this list fails the test.
var knownH2specFailures = map[string]string{
	"http2/4.2: Sends a large size HEADERS frame that exceeds the SETTINGS_MAX_FRAME_SIZE":                        "net/http answers instead of FRAME_SIZE_ERROR",
	"http2/6.5.3: Sends multiple values of SETTINGS_INITIAL_WINDOW_SIZE":                                          "net/http closes the connection",
	"http2/8.1.2.2: Sends a HEADERS frame that contains the connection-specific header field":                     "ztgate answers 400, not a PROTOCOL_ERROR reset",
	`http2/8.1.2.2: Sends a HEADERS frame that contains the TE header field with any value other than "trailers"`: "ztgate answers 400, not a PROTOCOL_ERROR reset",
}

// TestH2spec runs the HTTP/2 conformance suite against a listener.
func TestH2spec(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: h2spec takes about 20 s")
	}
	h2spec := testenv.Tool(t, "h2spec")
	up, _, _ := echoUpstream(t)
	// Every request goes to an upstream that reads the request body
	// before it answers. With a direct response the handler may finish
	// before a malformed body arrives, and whether the stream error is
	// still sent then depends on timing (h2spec 8.1.2.6).
	g := startGW(t, func(g *gw) string {
		return fmt.Sprintf(`
storage: %s/state
admin: { address: "127.0.0.1:%d" }
listeners: [{ name: public, address: "127.0.0.1:%d", protocols: [h1, h2], tls: { names: [localhost, 127.0.0.1] } }]
upstreams: [{ name: echo, endpoints: ["%s"] }]
routes: [{ name: all, upstream: echo }]
`, g.dir, g.admin, g.port, up)
	})
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	// -k: the checker does not verify the server certificate (a test tool).
	out, _ := exec.Command(h2spec, "-h", "127.0.0.1", "-p", fmt.Sprint(g.port), "-t", "-k", "-o", "5", "-j", report).CombinedOutput()
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("h2spec wrote no report: %v\n%s", err, out)
	}
	var suites struct {
		Suites []struct {
			Cases []struct {
				Package string    `xml:"package,attr"`
				Name    string    `xml:"classname,attr"`
				Failure *struct{} `xml:"failure"`
				Error   *struct{} `xml:"error"`
				Skipped *struct{} `xml:"skipped"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &suites); err != nil {
		t.Fatal(err)
	}
	total, passed := 0, 0
	var unexpected []string
	for _, s := range suites.Suites {
		for _, c := range s.Cases {
			total++
			switch {
			case c.Failure != nil || c.Error != nil:
				key := c.Package + ": " + c.Name
				if _, known := knownH2specFailures[key]; !known {
					unexpected = append(unexpected, key)
				}
			case c.Skipped == nil:
				passed++
				if why, known := knownH2specFailures[c.Package+": "+c.Name]; known {
					t.Logf("known deviation passed this time: %s: %s (%s)", c.Package, c.Name, why)
				}
			}
		}
	}
	t.Logf("h2spec: %d tests, %d passed", total, passed)
	if total < 140 {
		t.Fatalf("h2spec ran only %d tests\n%s", total, out)
	}
	if len(unexpected) > 0 {
		t.Fatalf("h2spec failures outside the known list:\n  %s", strings.Join(unexpected, "\n  "))
	}
}
