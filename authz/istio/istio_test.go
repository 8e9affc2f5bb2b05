package istio

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestStringMatch(t *testing.T) {
	for _, tc := range []struct {
		pat  string
		fold bool
		v    string
		want bool
	}{
		{"abc", false, "abc", true}, {"abc", false, "abcd", false}, {"abc", false, "", false},
		{"ab*", false, "abc", true}, {"ab*", false, "ab", true}, {"ab*", false, "a", false},
		{"*bc", false, "abc", true}, {"*bc", false, "bc", true}, {"*bc", false, "bcd", false},
		{"*", false, "x", true}, {"*", false, "", false},
		{"", false, "", true}, {"", false, "x", false},
		{"API.example.com", true, "api.EXAMPLE.com", true}, {"*.Example.com", true, "www.example.COM", true},
	} {
		if got := CompileString(tc.pat, tc.fold).Match(tc.v); got != tc.want {
			t.Errorf("%q (fold %v) on %q = %v, want %v", tc.pat, tc.fold, tc.v, got, tc.want)
		}
	}
}

func TestPathTemplate(t *testing.T) {
	for _, tc := range []struct {
		pat, path string
		want      bool
	}{
		{"/a/{*}", "/a/b", true}, {"/a/{*}", "/a/", false}, {"/a/{*}", "/a", false}, {"/a/{*}", "/a/b/c", false},
		{"/a/{*}/c", "/a/b/c", true}, {"/a/{*}/c", "/a/b/d", false}, {"/{*}/{*}", "/x/y", true},
		{"/a/{**}", "/a/", true}, {"/a/{**}", "/a/b/c/d", true}, {"/a/{**}", "/a", false}, {"/a/{**}", "/ab", false},
		{"/{**}", "/", true}, {"/{**}", "/anything/at/all", true},
		{"/a/{*}/{**}", "/a/b/", true}, {"/a/{*}/{**}", "/a//x", false},
		{"/a/b", "/a/b", true}, {"/a/*", "/a/b/c", true}, {"*.css", "/x/y.css", true},
	} {
		m, err := CompilePath(tc.pat)
		if err != nil {
			t.Fatalf("%q: %v", tc.pat, err)
		}
		if got := m.Match(tc.path); got != tc.want {
			t.Errorf("%q on %q = %v, want %v", tc.pat, tc.path, got, tc.want)
		}
	}
	for _, bad := range []string{"/a/{**}/b", "/a/x{*}", "/a/{*", "a/{*}", "/a/*/b", "/a/{*}/*", "/**/x"} {
		if _, err := CompilePath(bad); err == nil {
			t.Errorf("%q: want a compile error", bad)
		}
	}
}

// templateRegexp is the reference: Envoy's uri_template translation of
// {*} and {**} to RE2 (a segment is one or more characters other than
// "/"; ** is zero or more of anything).
func templateRegexp(pat string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i, seg := range strings.Split(pat, "/") {
		if i > 0 {
			b.WriteString("/")
		}
		switch seg {
		case "{*}":
			b.WriteString("[^/]+")
		case "{**}":
			b.WriteString(".*")
		default:
			b.WriteString(regexp.QuoteMeta(seg))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// FuzzPathTemplate compiles arbitrary patterns without panicking and
// checks every compiled template against the regexp reference.
func FuzzPathTemplate(f *testing.F) {
	for _, s := range [][2]string{
		{"/a/{*}", "/a/b"}, {"/a/{**}", "/a/b/c"}, {"/{*}/x/{**}", "/1/x/"}, {"/a/{*}/c", "/a//c"},
		{"/a*", "/ab"}, {"*b", "ab"}, {"*", ""}, {"/{**}", "/"}, {"/a/{**}/b", "/a/x/b"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pat, path string) {
		m, err := CompilePath(pat)
		if err != nil {
			return
		}
		got := m.Match(path)
		// The reference regexp cannot hold invalid UTF-8 literals (the
		// first crasher, testdata/fuzz/FuzzPathTemplate/fb8c5dd5a773cb47,
		// was "/{*}/\xf7": a harness bug, the matcher was right).
		if m.kind == template && utf8.ValidString(pat) {
			if want := templateRegexp(pat).MatchString(path); got != want {
				t.Fatalf("%q on %q = %v, reference regexp says %v", pat, path, got, want)
			}
		}
	})
}

// FuzzParse feeds arbitrary documents to the Istio loader: it must
// return policies or errors, never panic or hang.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"testdata/good", "testdata/bad"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte("---\n---\n"))
	f.Add([]byte("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: &a x}\nspec: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := Parse("fuzz.yaml", data, []string{"ext"})
		if err == nil {
			for _, p := range ps {
				if p.Policy.Name == "" {
					t.Fatalf("a policy without a name was accepted")
				}
			}
		}
	})
}

func TestParseKey(t *testing.T) {
	for _, tc := range []struct {
		key   string
		kind  KeyKind
		claim []string
		ok    bool
	}{
		{"request.auth.claims[groups]", KeyClaim, []string{"groups"}, true},
		{"request.auth.claims[a][b][c]", KeyClaim, []string{"a", "b", "c"}, true},
		{"request.auth.claims[a.b]", KeyClaim, []string{"a.b"}, true},
		{"request.headers[X-Y]", KeyHeader, nil, true},
		{"source.ip", KeySourceIP, nil, true},
		{"connection.sni", KeySNI, nil, true},
		{"request.auth.claims", 0, nil, false},
		{"request.auth.claims[]", 0, nil, false},
		{"request.auth.claims[a", 0, nil, false},
		{"request.auth.claims[a]x", 0, nil, false},
		{"request.headers[a][b]", 0, nil, false},
		{"destination.ip", 0, nil, false},
		{"experimental.envoy.filters.network.mysql_proxy[db.table]", 0, nil, false},
	} {
		k, err := ParseKey(tc.key)
		if (err == nil) != tc.ok || err == nil && (k.Kind != tc.kind || strings.Join(k.Claim, "|") != strings.Join(tc.claim, "|")) {
			t.Errorf("ParseKey(%q) = %+v, %v", tc.key, k, err)
		}
	}
}
