package jwt

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzParseHeader feeds arbitrary tokens to the pre-verification parsers
// (segment split, JOSE header, issuer peek): no panic, and a header that
// parses has an alg.
func FuzzParseHeader(f *testing.F) {
	for _, s := range []string{
		"eyJhbGciOiJSUzI1NiJ9.e30.sig", "a.b.c", "..", "a..", "eyJhbGciOiJub25lIn0.e30.",
		"eyJhbGciOjF9.e30.x", "eyJjcml0IjpbImIiXSwiYWxnIjoiUlMyNTYifQ.bnVsbA.x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		h, p, _, err := splitToken(tok)
		if err != nil {
			return
		}
		if hd, err := parseHeader(h); err == nil && hd.Alg == "" {
			t.Fatal("header without alg accepted")
		}
		_, _ = peekIssuer(p)
	})
}

// FuzzVerify sends arbitrary tokens through the whole verifier: it must
// refuse every one of them with a typed reason, never panic, never accept.
func FuzzVerify(f *testing.F) {
	a, _, _ := newAuth(f, sharedJWKSYAML(f, ""))
	demo := sharedToken(f, "demo.jwt")
	f.Add(demo[:len(demo)-2] + "AA")
	f.Add(strings.Replace(demo, ".", "..", 1))
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, tok string) {
		if tok == demo {
			return
		}
		id, err := a.Verify(tok, "details")
		if err == nil {
			// A different string can still carry demo.jwt's signature only
			// if it decodes to the same bytes (base64 trailing bits).
			if id.RequestPrincipal != "testing@secure.istio.io/testing@secure.istio.io" {
				t.Fatalf("accepted forged token %q as %q", tok, id.RequestPrincipal)
			}
			return
		}
		if ReasonOf(err) == 0 {
			t.Fatalf("untyped error %v", err)
		}
	})
}

// FuzzExtract feeds arbitrary header values, query strings and cookies to
// extraction and stripping: no panic, and a stripped request no longer
// carries the token at that location.
func FuzzExtract(f *testing.F) {
	f.Add("Bearer abc.def.ghi", "access_token=abc.def.ghi&x=1", "session=abc.def.ghi; a=b")
	f.Add("bearer ", "access_token=%zz&access_token=a", "session=\"quoted\"")
	f.Add("Token\x00x", "=&&=;", ";;;session=")
	locs := []location{
		{kind: locHeader, name: "Authorization", prefix: "Bearer "},
		{kind: locParam, name: "access_token"},
		{kind: locCookie, name: "session"},
	}
	f.Fuzz(func(t *testing.T, header, query, cookie string) {
		r := &http.Request{Header: http.Header{}, URL: &url.URL{Path: "/", RawQuery: query}, RequestURI: "/?" + query}
		r.Header["Authorization"] = []string{header}
		r.Header["Cookie"] = []string{cookie}
		for _, loc := range locs {
			for _, tok := range extract(r, loc) {
				strip(r, loc, tok)
				for _, again := range extract(r, loc) {
					if again == tok {
						t.Fatalf("%s: token %q still present after strip", loc, tok)
					}
				}
			}
		}
	})
}
