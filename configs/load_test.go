package configs

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden .err files of testdata/invalid")

// TestValidFiles: every file in testdata/valid loads.
func TestValidFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/valid/*.yaml")
	if len(files) == 0 {
		t.Fatal("no valid configs")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := Load(f); err != nil {
				t.Fatalf("%v", err)
			}
		})
	}
}

// TestInvalidFiles: every file in testdata/invalid is refused with
// exactly the text of its .err file (all problems, one per line).
func TestInvalidFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/invalid/*.yaml")
	if len(files) < 10 {
		t.Fatalf("only %d invalid configs", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Load(f)
			if err == nil {
				t.Fatal("loaded without error")
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".err"
			got := err.Error() + "\n"
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
				return
			}
			want, rerr := os.ReadFile(golden)
			if rerr != nil {
				t.Fatalf("missing golden file %s (run go test ./configs -update and review it): got\n%s", golden, got)
			}
			if got != string(want) {
				t.Fatalf("error text differs\n got: %s\nwant: %s", got, want)
			}
		})
	}
}

func TestEmbeddedDevConfig(t *testing.T) {
	cfg, err := LoadEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != Embedded || len(cfg.Listeners) == 0 {
		t.Fatalf("embedded config: %+v", cfg)
	}
	// configs/dev.yaml on disk is the same file.
	disk, err := os.ReadFile("dev.yaml")
	if err != nil || string(disk) != string(DevYAML()) {
		t.Fatal("configs/dev.yaml and the embedded copy differ")
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Load("testdata/valid/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Listeners[0]
	checks := []struct {
		name string
		ok   bool
	}{
		{"storage", cfg.Storage == "/var/lib/ztgate"},
		{"admin", cfg.Admin.Address == "127.0.0.1:9901"},
		{"protocols", strings.Join(l.Protocols, ",") == "h1,h2"},
		{"min_version", l.TLS.MinVersion == "1.2"},
		{"peer auth", l.PeerAuthentication.Mode == PeerDisable},
		{"max_connections", l.Limits.MaxConnections == 10000},
		{"access log", cfg.Log.AccessLogEnabled()},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("default %s not applied: %+v", c.name, cfg)
		}
	}
}

func TestEnvOverrides(t *testing.T) {
	data, _ := os.ReadFile("testdata/valid/minimal.yaml")
	cases := []struct {
		name string
		env  []string
		want string // admin.address, or the error text
	}{
		{"scalar override", []string{"ZTGATE_ADMIN_ADDRESS=127.0.0.1:9999"}, "127.0.0.1:9999"},
		{"unrelated variables ignored", []string{"PATH=/bin", "ZTGATE_CONFIG=/x"}, "127.0.0.1:9901"},
		{"typo refused", []string{"ZTGATE_ADMIN_ADRESS=x"}, "f.yaml: environment variable ZTGATE_ADMIN_ADRESS names no config key (e.g. ZTGATE_ADMIN_ADDRESS sets admin.address)"},
		{"override validated", []string{"ZTGATE_ADMIN_ADDRESS=nope"}, `f.yaml: admin.address: "nope" is not an address (use host:port, e.g. "127.0.0.1:8443" or ":8443")`},
		{"nested key", []string{"ZTGATE_LOG_LEVEL=debug"}, "127.0.0.1:9901"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("f.yaml", data, tc.env)
			switch {
			case err != nil && err.Error() != tc.want:
				t.Fatalf("error %q, want %q", err, tc.want)
			case err == nil && cfg.Admin.Address != tc.want:
				t.Fatalf("admin.address %q, want %q", cfg.Admin.Address, tc.want)
			}
		})
	}
}

// TestErrorsAreTyped: every problem is an *Error with file and key.
func TestErrorsAreTyped(t *testing.T) {
	_, err := Parse("x.yaml", []byte("routes: [{ upstream: nope }]\nlisteners: [{name: a}]"), nil)
	if err == nil {
		t.Fatal("no error")
	}
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ce *Error
		if !errors.As(e, &ce) || ce.File != "x.yaml" || ce.Key == "" {
			t.Errorf("%v is not a config error with a key", e)
		}
	}
}

// FuzzParse: the loader never panics, and accepts or refuses with a
// config error.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"testdata/valid", "testdata/invalid", "testdata/fuzz"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, file := range files {
			data, _ := os.ReadFile(file)
			f.Add(data)
		}
	}
	f.Add(devYAML)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data, nil)
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
		if err != nil {
			var ce *Error
			for _, e := range flattenErr(err) {
				if !errors.As(e, &ce) {
					t.Fatalf("not a config error: %T %v", e, e)
				}
			}
		}
	})
}

func flattenErr(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErr(e)...)
		}
		return out
	}
	return []error{err}
}
