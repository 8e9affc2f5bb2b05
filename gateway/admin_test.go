package gateway

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
)

func TestAdminEndpoints(t *testing.T) {
	cfg, err := configs.Parse("a.yaml", []byte(`
listeners: [{ name: p, address: "127.0.0.1:0", tls: { names: [localhost] } }]
routes: [{ name: r, direct_response: { status: 200 } }]
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.ReloadResult(false)
	a := NewAdmin(slog.New(slog.DiscardHandler), reg, func() *configs.Config { return cfg })
	notReady := errors.New("jwks https://idp/jwks.json not fetched yet")
	var ready bool
	a.AddReadyCheck("authn", func() error {
		if ready {
			return nil
		}
		return notReady
	})
	if err := a.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(t.Context())
	base := "http://" + a.Addr().String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz %d %q", code, body)
	}
	code, body := get("/readyz")
	if code != 503 || !strings.Contains(body, `"authn":"jwks https://idp/jwks.json not fetched yet"`) {
		t.Fatalf("/readyz not ready: %d %s", code, body)
	}
	ready = true
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, `"ready":true`) {
		t.Fatalf("/readyz ready: %d %s", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `ztgate_config_reload_total{result="failure"} 1`) {
		t.Fatalf("/metrics %d lacks the reload failure:\n%.2000s", code, body)
	}
	code, body = get("/config")
	var out map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &out) != nil || out["storage"] != "/var/lib/ztgate" {
		t.Fatalf("/config %d %s", code, body)
	}
}

func TestRedaction(t *testing.T) {
	v := map[string]any{
		"accel":   map[string]any{"pkcs11": map[string]any{"pin": "1234", "module": "/usr/lib/softhsm/libsofthsm2.so"}},
		"authz":   []any{map[string]any{"ext": map[string]any{"client_secret": "s3cr3t", "token_file": "", "url": "https://x"}}},
		"storage": "/var/lib/ztgate",
	}
	redact(v)
	out, _ := json.Marshal(v)
	s := string(out)
	for _, leaked := range []string{"1234", "s3cr3t"} {
		if strings.Contains(s, leaked) {
			t.Fatalf("secret %q not redacted: %s", leaked, s)
		}
	}
	for _, kept := range []string{"libsofthsm2.so", "https://x", "/var/lib/ztgate"} {
		if !strings.Contains(s, kept) {
			t.Fatalf("non-secret %q lost: %s", kept, s)
		}
	}
}
