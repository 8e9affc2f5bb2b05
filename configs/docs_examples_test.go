package configs_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/configs"
)

// docPages lists every Markdown page with config examples, how many
// ```yaml blocks it must have at least, and what each block must show.
var docPages = []struct {
	file  string
	min   int
	check func(*configs.Config) error
}{
	{"README.md", 3, nil},
	{"docs/configuration.md", 2, nil},
	{"docs/certificates.md", 4, hasTLSListener},
	{"docs/upstreams.md", 3, hasUpstream},
	{"docs/authn.md", 4, nil},
	{"docs/authz.md", 5, nil},
	{"docs/identity.md", 4, hasSVIDSource},
	{"docs/egress.md", 3, egressOn},
	{"docs/accel.md", 5, nil},
	{"docs/dns.md", 2, dnsOn},
}

var (
	yamlBlock    = regexp.MustCompile("(?s)```yaml\n(.*?)```")
	etcPath      = regexp.MustCompile(`/etc/ztgate/[\w./-]+`)
	upstreamName = regexp.MustCompile(`(?m)^  - name: (\S+)`)
)

// TestDocExamples loads every ```yaml block of the README and the config
// reference pages, so the docs cannot drift from the loader. Paths under
// /etc/ztgate/ are moved into a temporary directory holding placeholder
// files (the loader checks that files exist); a block with no listener
// is a fragment and gets a minimal one.
func TestDocExamples(t *testing.T) {
	for _, page := range docPages {
		t.Run(page.file, func(t *testing.T) {
			path := filepath.Join("..", page.file)
			doc, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			blocks := yamlBlock.FindAllSubmatch(doc, -1)
			if len(blocks) < page.min {
				t.Fatalf("found %d yaml blocks, want at least %d", len(blocks), page.min)
			}
			etc := placeholders(t, doc)
			for i, b := range blocks {
				y := strings.ReplaceAll(string(b[1]), "/etc/ztgate/", etc+"/")
				if !strings.Contains(y, "listeners:") {
					y += minimalListenerAndRoute(y)
				}
				cfg, err := configs.Parse(page.file, []byte(y), nil)
				if err != nil {
					t.Errorf("block %d does not load:\n%s\n%v", i, b[1], err)
					continue
				}
				if page.check != nil {
					if err := page.check(cfg); err != nil {
						t.Errorf("block %d: %v", i, err)
					}
				}
			}
		})
	}
}

// placeholders creates the /etc/ztgate/ files a page names: "x.d" is a
// directory, a path without an extension is a directory shown as prose,
// and a file inside an "x.d" directory is left out (the directory's
// loader would read it).
func placeholders(t *testing.T, doc []byte) string {
	t.Helper()
	etc := t.TempDir()
	for _, p := range etcPath.FindAll(doc, -1) {
		f := filepath.Join(etc, strings.TrimPrefix(string(p), "/etc/ztgate/"))
		switch {
		case strings.HasSuffix(f, ".d"):
			os.MkdirAll(f, 0o700)
		case filepath.Ext(f) == "" || strings.HasSuffix(filepath.Dir(f), ".d"):
		default:
			os.MkdirAll(filepath.Dir(f), 0o755)
			if err := os.WriteFile(f, []byte("placeholder\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return etc
}

// minimalListenerAndRoute completes a fragment: a listener, and a route
// to the fragment's first upstream if it defines one.
func minimalListenerAndRoute(y string) string {
	s := "\nlisteners:\n  - name: public\n    address: \":8443\"\n    tls: { names: [api.example.com] }\n"
	if m := upstreamName.FindStringSubmatch(y); m != nil && strings.Contains(y, "upstreams:") && !strings.Contains(y, "routes:") {
		s += "routes:\n  - name: r\n    upstream: " + m[1] + "\n"
	}
	return s
}

func hasTLSListener(c *configs.Config) error {
	for _, l := range c.Listeners {
		if l.TLS != nil {
			return nil
		}
	}
	return errors.New("no TLS listener")
}

func hasUpstream(c *configs.Config) error {
	if len(c.Upstreams) == 0 {
		return errors.New("no upstream")
	}
	return nil
}

func hasSVIDSource(c *configs.Config) error {
	if !c.Identity.HasSVIDSource() {
		return errors.New("configures no SVID source")
	}
	return nil
}

func egressOn(c *configs.Config) error {
	if !c.Egress.Enabled() {
		return fmt.Errorf("leaves the egress proxy off")
	}
	return nil
}

func dnsOn(c *configs.Config) error {
	if !c.DNS.Enabled() {
		return errors.New("leaves dnsguard off")
	}
	return nil
}

// sectionOn says, per testdata prefix, whether a good file turned its
// section on.
var sectionOn = map[string]func(*configs.Config) bool{
	"authn":  func(c *configs.Config) bool { return len(c.Authn.JWT) > 0 },
	"authz":  func(c *configs.Config) bool { return len(c.Authz.Policies) > 0 },
	"dns":    func(c *configs.Config) bool { return c.DNS.Enabled() },
	"egress": func(c *configs.Config) bool { return c.Egress.Enabled() },
}

// TestSectionTestdata loads configs/testdata/SECTION-good-*.yaml (must
// load and turn the section on) and SECTION-bad-*.yaml (must be refused
// with every "# want: <text>" line of the file in the error). A file
// without a listener is a fragment and gets a minimal one.
func TestSectionTestdata(t *testing.T) {
	for section, on := range sectionOn {
		files, _ := filepath.Glob(filepath.Join("testdata", section+"-*.yaml"))
		if len(files) < 3 {
			t.Errorf("only %d testdata/%s-*.yaml files", len(files), section)
		}
		for _, f := range files {
			t.Run(filepath.Base(f), func(t *testing.T) {
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				y := string(data)
				if !strings.Contains(y, "listeners:") {
					y += minimalListenerAndRoute(y)
				}
				var wants []string
				for _, l := range strings.Split(y, "\n") {
					if w, ok := strings.CutPrefix(l, "# want: "); ok {
						wants = append(wants, w)
					}
				}
				cfg, err := configs.Parse(filepath.Base(f), []byte(y), nil)
				if strings.Contains(f, "-good-") {
					if err != nil {
						t.Fatal(err)
					}
					if !on(cfg) {
						t.Fatalf("the %s section is off", section)
					}
					return
				}
				if len(wants) == 0 {
					t.Fatalf("a bad file needs '# want: <error text>' lines; the error was:\n%v", err)
				}
				if err == nil {
					t.Fatal("loaded without error")
				}
				for _, w := range wants {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("missing error %q in:\n%v", w, err)
					}
				}
			})
		}
	}
}
