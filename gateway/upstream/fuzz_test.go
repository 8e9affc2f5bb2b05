package upstream

import (
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/configs"
)

// FuzzOutboundHeaders feeds arbitrary inbound header lines to the
// outbound builder: it must not panic, and no hop-by-hop header (nor one
// named by Connection) may reach the upstream.
func FuzzOutboundHeaders(f *testing.F) {
	for _, s := range []string{
		"Connection: X-Foo, keep-alive\nX-Foo: 1\nKeep-Alive: timeout=5",
		"Connection: ,,, ,\nTE: trailers, gzip\nUpgrade: websocket",
		"Connection: Upgrade\nUpgrade: websocket\nProxy-Authorization: Basic eDp5",
		"X-Forwarded-For: 1.2.3.4, \nForwarded: for=\"[::1]\"\nTransfer-Encoding: chunked",
		"Connection: x-forwarded-for\nX-Forwarded-For: 10.0.0.1",
	} {
		f.Add(s, true)
		f.Add(s, false)
	}
	p, err := New(configs.Upstream{Name: "fuzz", Endpoints: []string{"127.0.0.1:1"}}, Deps{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(p.Close)
	f.Fuzz(func(t *testing.T, lines string, trusted bool) {
		r := httptest.NewRequest("GET", "https://front.test/", nil)
		for _, l := range strings.Split(lines, "\n") {
			k, v, ok := strings.Cut(l, ":")
			if !ok || !validHeaderName(strings.TrimSpace(k)) {
				continue
			}
			r.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		named := connectionTokens(r.Header)
		before := r.Header.Clone()
		out := p.outbound(r.Context(), r, &RequestInfo{TrustedPeer: trusted, RequestID: "id"})
		upgrade := strings.EqualFold(upgradeType(r.Header), "websocket")
		for k, v := range out.Header {
			switch {
			case k == "Te" && (len(v) != 1 || v[0] != "trailers"):
				t.Fatalf("TE forwarded as %q", v)
			case (k == "Connection" || k == "Upgrade") && upgrade:
			case k == "Te":
			case isHop(k):
				t.Fatalf("hop-by-hop %s forwarded", k)
			}
			for _, n := range named {
				if n == k && !(upgrade && (k == "Upgrade" || k == "Connection")) && k != hdrXFF && k != hdrXFProto && k != hdrXFHost && k != hdrRequestID && k != "User-Agent" && k != "Te" {
					t.Fatalf("%s named by Connection was forwarded", k)
				}
			}
		}
		// The inbound request is never modified.
		if len(before) != len(r.Header) {
			t.Fatal("outbound modified the inbound headers")
		}
	})
}

// connectionTokens returns the header names listed in Connection,
// canonicalised: the fuzzer's oracle for what must not be forwarded.
func connectionTokens(h http.Header) []string {
	var out []string
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out = append(out, textproto.CanonicalMIMEHeaderKey(f))
			}
		}
	}
	return out
}

// validHeaderName mirrors the config's check, to keep the fuzzer to
// header names a server would accept.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}
