package authz

import (
	"math/rand/v2"
	"testing"

	"github.com/ztgate/ztgate/configs"
)

// TestIndexAgreesWithScan: a policy with enough rules to be indexed
// finds the same first matching rule as the plain scan, for random
// rules (indexable and not) and random paths.
func TestIndexAgreesWithScan(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	segs := []string{"a", "b", "c", "api", ""}
	pat := func() string {
		s := segs[r.IntN(len(segs))]
		switch r.IntN(7) {
		case 0:
			return "/" + s
		case 1:
			return "/" + s + "/*"
		case 2:
			return "/" + s + "/{*}"
		case 3:
			return "/" + s + "/{**}"
		case 4:
			return "/{*}/" + s
		case 5:
			return "*" + s
		default:
			return "/" + s + "*"
		}
	}
	for round := range 50 {
		cp := configs.Policy{Name: "p", Action: configs.ActionAllow}
		for range 20 + r.IntN(40) {
			var rule configs.Rule
			for range r.IntN(3) {
				op := configs.Operation{}
				for range r.IntN(3) {
					op.Paths = append(op.Paths, pat())
				}
				if r.IntN(3) == 0 {
					op.Methods = []string{"GET"}
				}
				if len(op.Paths) == 0 && len(op.Methods) == 0 {
					op.Methods = []string{"POST"}
				}
				rule.To = append(rule.To, configs.To{Operation: op})
			}
			cp.Rules = append(cp.Rules, rule)
		}
		c := &compiler{}
		p := c.policy(&cp, where{file: "x", key: "p"})
		if len(c.errs) > 0 {
			t.Fatal(c.errs)
		}
		if p.index == nil {
			t.Fatal("not indexed")
		}
		for range 200 {
			path := ""
			for range r.IntN(4) {
				path += "/" + segs[r.IntN(len(segs))]
			}
			a := &Attributes{Path: path, Method: []string{"GET", "POST"}[r.IntN(2)]}
			want := -1
			for i := range p.rules {
				if p.rules[i].match(a) {
					want = i
					break
				}
			}
			if got := p.match(a); got != want {
				t.Fatalf("round %d: %s %q: index says rule %d, scan says %d", round, a.Method, path, got, want)
			}
		}
	}
}
