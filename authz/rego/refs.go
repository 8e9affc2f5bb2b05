package rego

import (
	"sort"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// need is the part of the input document a policy can read: the whole
// subtree (all), or only some keys of an object, each with its own need.
// A nil *need is "nothing under this key".
type need struct {
	all  bool
	kids map[string]*need
}

// needAll is the whole input document.
var needAll = &need{all: true}

// child is the need under key k.
func (n *need) child(k string) *need {
	if n == nil || n.all {
		return n
	}
	return n.kids[k]
}

// add marks the subtree at path as read.
func (n *need) add(path []string) {
	if n.all {
		return
	}
	for _, k := range path {
		if n.kids == nil {
			n.kids = map[string]*need{}
		}
		c := n.kids[k]
		if c == nil {
			c = &need{}
			n.kids[k] = c
		}
		if c.all {
			return
		}
		n = c
	}
	n.all, n.kids = true, nil
}

// String is a canonical spelling of n ("*" for a whole subtree), equal
// for equal needs.
func (n *need) String() string {
	var b strings.Builder
	n.write(&b)
	return b.String()
}

func (n *need) write(b *strings.Builder) {
	switch {
	case n == nil:
		b.WriteString("-")
	case n.all:
		b.WriteString("*")
	default:
		keys := make([]string, 0, len(n.kids))
		for k := range n.kids {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Quote(k))
			b.WriteByte(':')
			n.kids[k].write(b)
		}
		b.WriteByte('}')
	}
}

// blockingBuiltins wait on the evaluation's context (network or remote
// schema I/O). A policy that calls one is evaluated under a context
// deadline, so the deadline also bounds the wait; other policies use
// the cheaper step-counting deadline (deadline.go).
var blockingBuiltins = map[string]bool{
	"http.send":          true,
	"net.lookup_ip_addr": true,
	"json.match_schema":  true,
	"json.verify_schema": true,
}

// analysis is what New learns from a policy's source, once per config.
type analysis struct {
	// input is the part of the input document the policy can read.
	input *need
	// blocking: the policy calls a builtin that waits on its context.
	blocking bool
}

// analyze finds every reference to the input document in the modules
// and the query. A reference input.a.b[x].c can read only the subtree at
// its longest constant prefix (a.b), so the input built per request
// holds just those subtrees: for any reference the policy evaluates,
// the pruned document gives the same value as the whole one, and a key
// left out cannot be observed (enumerating an object's keys needs a
// reference that ends there, which marks the whole object as read).
// Anything that can see input as a whole (a bare input, input[x], an
// import of input, `with input as`) needs the whole document.
func analyze(mods map[string]*ast.Module, query ast.Body) analysis {
	res := analysis{input: &need{}}
	if len(mods) == 0 && query == nil {
		res.input = needAll
		return res
	}
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		switch t := x.(type) {
		case ast.Var:
			// A bare input (an argument, a domain, a with target, an
			// import alias): everything.
			if t.Equal(ast.InputRootDocument.Value) {
				res.input = needAll
			}
		case ast.Ref:
			if len(t) == 0 {
				return true
			}
			if blockingBuiltins[t.String()] {
				res.blocking = true
			}
			if t[0].Value.Compare(ast.InputRootDocument.Value) == 0 {
				res.input.add(constPrefix(t[1:]))
			} else {
				vis.Walk(t[0])
			}
			// Keys may hold references of their own: data.x[input.y].
			for _, e := range t[1:] {
				vis.Walk(e)
			}
			return true
		}
		return false
	})
	for _, m := range mods {
		vis.Walk(m)
	}
	if query != nil {
		vis.Walk(query)
	}
	return res
}

// constPrefix is the leading run of string keys of a reference's path.
func constPrefix(path ast.Ref) []string {
	out := make([]string, 0, len(path))
	for _, e := range path {
		s, ok := e.Value.(ast.String)
		if !ok {
			break
		}
		out = append(out, string(s))
	}
	return out
}
