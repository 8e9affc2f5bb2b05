package configs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/configs"
)

func TestIdentityConfig(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "partner.pem")
	if err := os.WriteFile(bundle, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const head = "listeners:\n  - name: public\n    address: \":8443\"\n    tls: { names: [api.example.com] }\n"
	spiffeUpstream := "upstreams:\n  - name: details\n    endpoints: [\"10.0.0.7:9080\"]\n    tls: { spiffe_id: spiffe://example.org/ns/default/sa/details }\n"
	tests := []struct {
		name string
		yaml string
		want string // "" = valid
	}{
		{"defaults", "identity:\n  workload_api: unix:///run/spire/agent.sock\n", ""},
		{"tcp", "identity:\n  workload_api: tcp://127.0.0.1:8081\n", ""},
		{"relative socket", "identity:\n  workload_api: unix://run/agent.sock\n", "identity.workload_api: \"unix://run/agent.sock\" must be unix:// followed by an absolute socket path"},
		{"no scheme", "identity:\n  workload_api: /run/spire/agent.sock\n", "identity.workload_api: \"/run/spire/agent.sock\" has scheme \"\"; use unix or tcp"},
		{"tcp name", "identity:\n  workload_api: tcp://spire:8081\n", "must be tcp://IP:port"},
		{"both sources", "identity:\n  workload_api: unix:///run/a.sock\n  files: {cert: a, key: b, bundle: c}\n", "identity: set either workload_api or files, not both"},
		{"files incomplete", "identity:\n  files: {cert: a.pem}\n", "identity.files.key: must name a PEM file"},
		{"bad own id", "identity:\n  workload_api: unix:///run/a.sock\n  spiffe_id: example.org/gw\n", "identity.spiffe_id: \"example.org/gw\" is not a SPIFFE ID"},
		{"bad trust domain", "identity:\n  trust_bundles: [{trust_domain: \"spiffe://Bad Domain\", file: " + bundle + "}]\n", "identity.trust_bundles[0].trust_domain"},
		{"missing bundle file", "identity:\n  trust_bundles: [{trust_domain: partner.org, file: " + filepath.Join(dir, "nope.pem") + "}]\n", "identity.trust_bundles[0].file"},
		{"duplicate trust domain", "identity:\n  trust_bundles:\n    - {trust_domain: partner.org, file: " + bundle + "}\n    - {trust_domain: partner.org, file: " + bundle + "}\n", "identity.trust_bundles[1].trust_domain: \"partner.org\" is already listed at trust_bundles[0]"},
		{"short watch", "identity:\n  workload_api: unix:///run/a.sock\n  watch_interval: 1ms\n", "identity.watch_interval: 1ms is too short"},
		{"bad backoff", "identity:\n  workload_api: unix:///run/a.sock\n  backoff: {initial: 10s, max: 1s}\n", "identity.backoff: initial (10s) must be positive and max (1s) at least initial"},
		{"typo", "identity:\n  workload_apl: unix:///run/a.sock\n", "workload_apl"},
		{"federation web", "identity:\n  workload_api: unix:///run/a.sock\n  federation:\n    - {trust_domain: partner.org, bundle_endpoint_url: \"https://spire.partner.org:8443\"}\n", ""},
		{"federation http", "identity:\n  federation:\n    - {trust_domain: partner.org, bundle_endpoint_url: \"http://spire.partner.org\"}\n", "identity.federation[0].bundle_endpoint_url: \"http://spire.partner.org\" must be an https:// URL"},
		{"federation spiffe without id", "identity:\n  federation:\n    - {trust_domain: partner.org, bundle_endpoint_url: \"https://spire.partner.org\", profile: https_spiffe}\n", "identity.federation[0].endpoint_spiffe_id: \"\" is not a SPIFFE ID"},
		{"federation bad profile", "identity:\n  federation:\n    - {trust_domain: partner.org, bundle_endpoint_url: \"https://spire.partner.org\", profile: spiffe}\n", "identity.federation[0].profile: \"spiffe\" is not valid (use one of: https_web, https_spiffe)"},
		{"federation duplicate", "identity:\n  federation:\n    - {trust_domain: partner.org, bundle_endpoint_url: \"https://a.partner.org\"}\n    - {trust_domain: partner.org, bundle_endpoint_url: \"https://b.partner.org\"}\n", "identity.federation[1].trust_domain: \"partner.org\" is already listed at federation[0]"},
		{"federation short refresh", "identity:\n  federation:\n    - {trust_domain: partner.org, bundle_endpoint_url: \"https://a.partner.org\", refresh_interval: 10ms}\n", "identity.federation[0].refresh_interval: 10ms is too short"},
		{"spiffe upstream without svid", spiffeUpstream, "identity: upstream \"details\" verifies by SPIFFE ID and presents the gateway's SVID: set identity.workload_api"},
		{"spiffe upstream with svid", spiffeUpstream + "identity:\n  workload_api: unix:///run/a.sock\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := configs.Parse("ztgate.yaml", []byte(head+tc.yaml), nil)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				id := cfg.Identity
				if id.WatchInterval != time.Second || id.Backoff.Initial != 500*time.Millisecond || id.Backoff.Max != 30*time.Second {
					t.Errorf("defaults: %+v", id)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}
