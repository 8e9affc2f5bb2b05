package rego_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/ztgate/ztgate/authz"
)

// BenchmarkRegoDecision: a full engine decision through a CUSTOM Rego
// policy (object result, claims and peer lookups), input built from the
// attributes each time.
func BenchmarkRegoDecision(b *testing.B) {
	e := engineWith(b, "testdata/object.rego", "data.ztgate.test.object.decision", time.Second)
	a := &authz.Attributes{
		Method: "GET", Path: "/people/1", RawQuery: "lang=en", Host: "api.example.com",
		SourceIP: netip.MustParseAddr("10.0.0.1"), RequestPrincipal: "iss/alice",
		Claims:  map[string]any{"groups": []any{"admins"}, "sub": "alice"},
		Headers: map[string][]string{"authorization": {"Bearer x"}, "user-agent": {"curl/8"}, "accept": {"*/*"}},
	}
	ctx := context.Background()
	if d := e.Decide(ctx, a); !d.Allowed {
		b.Fatalf("not allowed: %s", d.Reason)
	}
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(ctx, a)
	}
}
