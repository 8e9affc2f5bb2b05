package rego

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// TestVirtualCacheMatchesOPA runs random Push, Pop, Put and Get on
// vcache and on OPA's own cache and wants the same answers: refs that
// share prefixes, undefined marks, values over undefined marks, frames,
// reused key buffers, and enough entries to switch to the index.
func TestVirtualCacheMatchesOPA(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	names := []*ast.Term{ast.VarTerm("data"), ast.StringTerm("a"), ast.StringTerm("b"), ast.IntNumberTerm(1),
		ast.StringTerm("c"), ast.BooleanTerm(true), ast.ArrayTerm(ast.StringTerm("x"))}
	for i := range 40 {
		names = append(names, ast.StringTerm(fmt.Sprintf("k%d", i)))
	}
	randRef := func(buf ast.Ref) ast.Ref {
		buf = buf[:0]
		buf = append(buf, names[0])
		for range r.IntN(4) {
			buf = append(buf, names[1+r.IntN(len(names)-1)])
		}
		return buf
	}
	for run := range 200 {
		ours, theirs := newVCache(), topdown.NewVirtualCache()
		depth := 0
		buf := make(ast.Ref, 0, 8) // reused, as OPA reuses its key buffers
		for step := range 300 {
			switch op := r.IntN(10); {
			case op == 0:
				ours.Push()
				theirs.Push()
				depth++
			case op == 1 && depth > 0:
				ours.Pop()
				theirs.Pop()
				depth--
			case op < 6:
				ref := randRef(buf)
				var v *ast.Term
				if r.IntN(3) > 0 {
					v = ast.IntNumberTerm(r.IntN(100))
				}
				ours.Put(ref, v)
				theirs.Put(ref, v)
			default:
				ref := randRef(buf)
				v1, u1 := ours.Get(ref)
				v2, u2 := theirs.Get(ref)
				if u1 != u2 || !v1.Equal(v2) {
					t.Fatalf("run %d step %d: Get(%v) = %v,%v; OPA: %v,%v", run, step, ref, v1, u1, v2, u2)
				}
			}
			if k1, k2 := keys(ours.Keys()), keys(theirs.Keys()); fmt.Sprint(k1) != fmt.Sprint(k2) {
				t.Fatalf("run %d step %d: Keys = %v; OPA: %v", run, step, k1, k2)
			}
		}
	}
}

func keys(refs []ast.Ref) []string {
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = r.String()
	}
	sort.Strings(out)
	return out
}
