package authz_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/ztgate/ztgate/authz"
	"github.com/ztgate/ztgate/configs"
)

func benchConfig(policies ...configs.Policy) *configs.Config {
	cfg := &configs.Config{
		File:      "bench.yaml",
		Listeners: []configs.Listener{{Name: "public", Address: "127.0.0.1:8443"}},
		Routes:    []configs.Route{{Name: "r"}},
	}
	for i := range policies {
		policies[i].SetDefaults()
	}
	cfg.Authz.Policies = policies
	return cfg
}

func benchDecide(b *testing.B, cfg *configs.Config, a *authz.Attributes, wantAllow bool) {
	e, err := authz.New(cfg, authz.Deps{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if d := e.Decide(ctx, a); d.Allowed != wantAllow {
		b.Fatalf("allowed = %v: %s", d.Allowed, d.Reason)
	}
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(ctx, a)
	}
}

// BenchmarkDecisionRules: one ALLOW policy with n rules (method, path
// template and a claim condition each); the request matches only the
// last rule, so every rule is tested.
func BenchmarkDecisionRules(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			p := configs.Policy{Name: "many", Action: "ALLOW"}
			for i := range n {
				p.Rules = append(p.Rules, configs.Rule{
					From: []configs.From{{Source: configs.Source{RequestPrincipals: []string{"testing@secure.istio.io/*"}}}},
					To:   []configs.To{{Operation: configs.Operation{Methods: []string{"GET"}, Paths: []string{fmt.Sprintf("/svc%d/{*}/items/{**}", i)}}}},
					When: []configs.Condition{{Key: "request.auth.claims[groups]", Values: []string{"group1"}}},
				})
			}
			a := base()
			a.Path = fmt.Sprintf("/svc%d/x/items/1/2", n-1)
			benchDecide(b, benchConfig(p), a, true)
		})
	}
}

// BenchmarkDecisionCIDRs: a DENY policy with 10,000 remote_ip_blocks
// (random IPv4 and IPv6 prefixes) in front of an allow-all.
func BenchmarkDecisionCIDRs(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	var blocks []string
	for range 10000 {
		if r.IntN(4) == 0 {
			var x [16]byte
			for j := range x {
				x[j] = byte(r.IntN(256))
			}
			x[0] = 0x2a
			blocks = append(blocks, netip.PrefixFrom(netip.AddrFrom16(x), 32+r.IntN(97)).Masked().String())
			continue
		}
		x := [4]byte{byte(64 + r.IntN(100)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}
		blocks = append(blocks, netip.PrefixFrom(netip.AddrFrom4(x), 16+r.IntN(17)).Masked().String())
	}
	deny := configs.Policy{Name: "blocklist", Action: "DENY", Rules: []configs.Rule{{From: []configs.From{{Source: configs.Source{RemoteIPBlocks: blocks}}}}}}
	allow := configs.Policy{Name: "all", Action: "ALLOW", Rules: []configs.Rule{{}}}
	benchDecide(b, benchConfig(deny, allow), base(), true)
}

// BenchmarkDecisionRulesUnindexed: n rules that differ only in a header
// condition, so the path index cannot narrow them: the worst case, a
// scan of every rule.
func BenchmarkDecisionRulesUnindexed(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			p := configs.Policy{Name: "many", Action: "ALLOW"}
			for i := range n {
				p.Rules = append(p.Rules, configs.Rule{
					To:   []configs.To{{Operation: configs.Operation{Methods: []string{"GET"}}}},
					When: []configs.Condition{{Key: "request.headers[x-tenant]", Values: []string{fmt.Sprintf("t%d", i)}}},
				})
			}
			a := base()
			a.Headers = map[string][]string{"x-tenant": {fmt.Sprintf("t%d", n-1)}}
			benchDecide(b, benchConfig(p), a, true)
		})
	}
}
