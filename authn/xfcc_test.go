package authn

import (
	"strings"
	"testing"
)

func TestXFCC(t *testing.T) {
	p := &Peer{SPIFFEID: "spiffe://example.org/ns/default/sa/sleep", CertSHA256: strings.Repeat("ab", 32), Subject: `CN=sle"ep,O=a\b`}
	got := p.XFCC("spiffe://example.org/ns/gw/sa/ztgate")
	want := `By=spiffe://example.org/ns/gw/sa/ztgate;Hash=` + strings.Repeat("ab", 32) + `;Subject="CN=sle\"ep,O=a\\b";URI=spiffe://example.org/ns/default/sa/sleep`
	if got != want {
		t.Fatalf("XFCC\n got %s\nwant %s", got, want)
	}
	elems, err := ParseXFCC(got + `,By=x;URI=spiffe://a/b;URI=spiffe://a/c`)
	if err != nil || len(elems) != 2 {
		t.Fatalf("ParseXFCC: %v %v", elems, err)
	}
	if elems[0].Get("subject") != p.Subject || elems[0].Get("URI") != p.SPIFFEID || elems[1].Get("URI") != "spiffe://a/b" {
		t.Errorf("parsed %v", elems)
	}
	// Envoy's documented example.
	envoy := `By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com`
	if e, err := ParseXFCC(envoy); err != nil || e[0].Get("Subject") != "/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client" {
		t.Errorf("Envoy example: %v %v", e, err)
	}
	for _, bad := range []string{"", "By", "By=\"x", "=x", "By=a\"b", "By=x;;", "By=x,"} {
		if _, err := ParseXFCC(bad); err == nil {
			t.Errorf("ParseXFCC(%q) accepted", bad)
		}
	}
}

// FuzzXFCC: parsing never panics, and what XFCC renders parses back to
// the same values.
func FuzzXFCC(f *testing.F) {
	f.Add(`By=spiffe://a/b;Hash=00;Subject="CN=x, O=\"y\"";URI=spiffe://a/c`, "CN=a;b", "spiffe://td/x")
	f.Add(`Hash=1,Hash=2`, `"\`, "")
	f.Fuzz(func(t *testing.T, header, subject, id string) {
		_, _ = ParseXFCC(header)
		p := &Peer{Subject: subject, SPIFFEID: id, CertSHA256: "00"}
		s := p.XFCC("spiffe://gw/x")
		e, err := ParseXFCC(s)
		if err != nil {
			t.Fatalf("XFCC %q does not parse: %v", s, err)
		}
		if hasControl(s) || strings.ContainsRune(s, 0x7f) {
			t.Fatalf("XFCC %q carries control characters", s)
		}
		if hasControl(subject) || strings.ContainsRune(subject, 0x7f) {
			return
		}
		if len(e) != 1 || e[0].Get("Subject") != subject {
			t.Fatalf("round trip of subject %q: %q → %v", subject, s, e)
		}
	})
}
