package extauthz_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/authz"
	"github.com/ztgate/ztgate/authz/extauthz"
	"github.com/ztgate/ztgate/configs"
)

// service is a real forward-auth server on loopback: it allows requests
// that carry "authorization: Bearer good", answers 401 with a body to
// others, and never answers for path /hang until the test ends.
func service(t *testing.T) *httptest.Server {
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/hang"):
			select {
			case <-r.Context().Done():
			case <-done:
			}
			return
		case r.Header.Get("Authorization") == "Bearer good":
			if r.Header.Get("X-Forwarded-Uri") != "/check/me?q=1" || r.URL.Path != "/auth/check/me" || r.Method != "POST" {
				w.WriteHeader(http.StatusTeapot)
				return
			}
			w.Header().Set("X-User", "alice")
			w.Header().Set("X-Internal", "not copied")
			w.WriteHeader(http.StatusOK)
		default:
			w.Header().Set("WWW-Authenticate", "Bearer")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte("who are you?"))
		}
	}))
	t.Cleanup(func() { close(done); srv.Close() })
	return srv
}

func attrs(auth, path string) *authz.Attributes {
	return &authz.Attributes{Method: "POST", Path: path, RawQuery: "q=1", Host: "api.example.com",
		SourceIP: netip.MustParseAddr("127.0.0.1"), Headers: map[string][]string{"authorization": {auth}}}
}

func TestProvider(t *testing.T) {
	srv := service(t)
	closed := func() string { // a loopback port with nothing listening
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr
	}()
	for _, tc := range []struct {
		name     string
		url      string
		failOpen bool
		a        *authz.Attributes
		allowed  bool
		status   int
		isErr    bool
	}{
		{"allow copies chosen headers", srv.URL + "/auth", false, attrs("Bearer good", "/check/me"), true, 0, false},
		{"deny passes status and body", srv.URL + "/auth", false, attrs("Bearer bad", "/check/me"), false, 401, false},
		{"timeout fails closed with status_on_error", srv.URL + "/auth", false, attrs("Bearer good", "/hang"), false, 503, true},
		{"timeout fails open", srv.URL + "/auth", true, attrs("Bearer good", "/hang"), true, 0, false},
		{"unreachable fails closed", closed, false, attrs("Bearer good", "/x"), false, 503, true},
		{"unreachable fails open", closed, true, attrs("Bearer good", "/x"), true, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := extauthz.New("ext", &configs.HTTPProvider{URL: tc.url, Timeout: 100 * time.Millisecond, FailOpen: tc.failOpen,
				StatusOnError: 503, IncludeRequestHeaders: []string{"authorization"}, HeadersToUpstream: []string{"x-user"}, HeadersToClient: []string{"www-authenticate"}})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			res, err := p.Check(context.Background(), tc.a)
			if (err != nil) != tc.isErr || res.Allowed != tc.allowed || res.Status != tc.status {
				t.Fatalf("got %+v err=%v; want allowed=%v status=%d err=%v", res, err, tc.allowed, tc.status, tc.isErr)
			}
			switch tc.name {
			case "allow copies chosen headers":
				if len(res.UpstreamHeaders) != 1 || res.UpstreamHeaders[0] != (authz.Header{Name: "X-User", Value: "alice"}) {
					t.Errorf("upstream headers %v", res.UpstreamHeaders)
				}
			case "deny passes status and body":
				if res.Body != "who are you?" || len(res.ResponseHeaders) != 1 {
					t.Errorf("body %q headers %v", res.Body, res.ResponseHeaders)
				}
			}
		})
	}
}

func TestPlainHTTPOnlyToLoopback(t *testing.T) {
	if _, err := extauthz.New("x", &configs.HTTPProvider{URL: "http://auth.example.com/check"}); err == nil {
		t.Fatal("plain http to a remote host must be refused")
	}
}

// TestThroughEngine wires the provider as authz does in the gateway, with
// status_on_error reaching the decision.
func TestThroughEngine(t *testing.T) {
	srv := service(t)
	cfg, err := configs.Parse("test.yaml", []byte(`
listeners:
  - name: public
    address: "127.0.0.1:0"
    tls: { names: [localhost] }
routes:
  - name: r
    direct_response: { status: 200 }
authz:
  custom_providers:
    - name: ext
      http: { url: "`+srv.URL+`/auth", timeout: 100ms, status_on_error: 503, headers_to_upstream: [x-user] }
  policies:
    - name: forward-auth
      action: CUSTOM
      provider: ext
      rules: [{to: [{operation: {paths: ["/check/*", "/hang"]}}]}]
`), os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	e, err := authz.New(cfg, authz.Deps{HTTP: extauthz.Factory})
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(context.Background(), attrs("Bearer good", "/check/me")); !d.Allowed || len(d.UpstreamHeaders) != 1 {
		t.Errorf("good token: %+v", d)
	}
	if d := e.Decide(context.Background(), attrs("Bearer bad", "/check/me")); d.Allowed || d.Status != 401 || d.Body != "who are you?" {
		t.Errorf("bad token: %+v", d)
	}
	if d := e.Decide(context.Background(), attrs("Bearer good", "/hang")); d.Allowed || d.Status != 503 {
		t.Errorf("timeout: %+v, want 503 deny", d)
	}
	if d := e.Decide(context.Background(), attrs("", "/elsewhere")); !d.Allowed {
		t.Errorf("a path the CUSTOM rules do not select is not sent to the provider: %+v", d)
	}
}
