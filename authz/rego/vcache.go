package rego

import (
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// vcacheIndexAt is the number of entries in a frame past which lookups
// go through a hash index instead of a scan.
const vcacheIndexAt = 16

// vcache is a topdown.VirtualCache (OPA's memo of rule values within one
// evaluation) with the same behaviour as topdown.NewVirtualCache, built
// for the few entries a request-time policy makes: a frame is a short
// list searched in place, indexed by hash only once it grows, instead of
// a trie of hash maps allocated per path element (about 1 KiB for one
// rule). TestVirtualCacheMatchesOPA runs both on the same operations.
type vcache struct {
	frames []vframe
}

type vframe struct {
	entries []ventry
	index   map[int][]int // ref hash → entries, once len(entries) > vcacheIndexAt
}

type ventry struct {
	ref       ast.Ref
	value     *ast.Term
	undefined bool
}

var _ topdown.VirtualCache = (*vcache)(nil)

func newVCache() *vcache {
	c := &vcache{frames: make([]vframe, 1, 2)}
	return c
}

// Push starts a new, empty frame (OPA does this for `with`).
func (c *vcache) Push() { c.frames = append(c.frames, vframe{}) }

// Pop drops the top frame and its entries.
func (c *vcache) Pop() {
	c.frames[len(c.frames)-1] = vframe{}
	c.frames = c.frames[:len(c.frames)-1]
}

func (f *vframe) find(ref ast.Ref) int {
	if f.index != nil {
		for _, i := range f.index[ref.Hash()] {
			if f.entries[i].ref.Equal(ref) {
				return i
			}
		}
		return -1
	}
	for i := range f.entries {
		if f.entries[i].ref.Equal(ref) {
			return i
		}
	}
	return -1
}

// Get returns the value cached for ref: (value, false), or (nil, true)
// for a ref recorded as undefined, or (nil, false) when not cached.
func (c *vcache) Get(ref ast.Ref) (*ast.Term, bool) {
	f := &c.frames[len(c.frames)-1]
	i := f.find(ref)
	if i < 0 {
		return nil, false
	}
	if e := &f.entries[i]; e.undefined {
		return nil, true
	} else {
		return e.value, false
	}
}

// Put records value for ref; a nil value records ref as undefined. As in
// OPA's cache, a later value does not clear an earlier undefined mark.
func (c *vcache) Put(ref ast.Ref, value *ast.Term) {
	f := &c.frames[len(c.frames)-1]
	i := f.find(ref)
	if i < 0 {
		// OPA passes slices of buffers it reuses: keep a copy.
		f.entries = append(f.entries, ventry{ref: append(ast.Ref(nil), ref...)})
		i = len(f.entries) - 1
		switch {
		case f.index != nil:
			h := ref.Hash()
			f.index[h] = append(f.index[h], i)
		case len(f.entries) > vcacheIndexAt:
			f.index = make(map[int][]int, 2*len(f.entries))
			for j := range f.entries {
				h := f.entries[j].ref.Hash()
				f.index[h] = append(f.index[h], j)
			}
		}
	}
	if value != nil {
		f.entries[i].value = value
	} else {
		f.entries[i].undefined = true
	}
}

// Keys returns the refs with a value (not undefined) in the top frame.
func (c *vcache) Keys() []ast.Ref {
	f := &c.frames[len(c.frames)-1]
	var keys []ast.Ref
	for _, e := range f.entries {
		if e.value != nil {
			keys = append(keys, e.ref)
		}
	}
	return keys
}
