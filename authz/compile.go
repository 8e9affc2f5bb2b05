package authz

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ztgate/ztgate/authz/ipset"
	"github.com/ztgate/ztgate/authz/istio"
	"github.com/ztgate/ztgate/configs"
)

// policy is one compiled policy. Never written after New.
type policy struct {
	name     string
	action   Action
	dryRun   bool
	origin   string // "" for the main config file
	rules    []rule
	custom   CustomProvider
	provider string // provider name, or "rego"
	selector map[string]string
	// matchAll: a CUSTOM policy without rules applies to every request.
	matchAll bool
	// index: for policies with many rules, the rules that can match a
	// path with a given first segment; rest are the rules that cannot be
	// indexed. Both ascending, so the first match is still the first rule.
	index map[string][]int32
	rest  []int32
	// reasons[i] is the decision reason when rule i matches (built once).
	reasons []string
}

// indexThreshold is the rule count from which a policy gets an index.
const indexThreshold = 16

func (p *policy) buildIndex(keys [][]string) {
	if len(p.rules) < indexThreshold {
		return
	}
	p.index = map[string][]int32{}
	for i, ks := range keys {
		if ks == nil {
			p.rest = append(p.rest, int32(i))
			continue
		}
		for _, k := range ks {
			if l := p.index[k]; len(l) == 0 || l[len(l)-1] != int32(i) {
				p.index[k] = append(l, int32(i))
			}
		}
	}
}

// rule is one compiled rule: from (any) AND to (any) AND when (all).
type rule struct {
	from [][]check
	to   [][]check
	when []check
	text string // the rule as written, for explanations
}

// check is one field test; name says which, for explanations.
type check struct {
	name string
	fn   func(*Attributes) bool
}

// match returns the index of the first matching rule, or -1.
func (p *policy) match(a *Attributes) int {
	if p.index == nil {
		for i := range p.rules {
			if p.rules[i].match(a) {
				return i
			}
		}
		return -1
	}
	// Merge the path's bucket with the unindexed rules, in rule order.
	bucket, rest := p.index[istio.PathFirstSegment(a.Path)], p.rest
	for len(bucket) > 0 || len(rest) > 0 {
		var i int32
		if len(rest) == 0 || len(bucket) > 0 && bucket[0] < rest[0] {
			i, bucket = bucket[0], bucket[1:]
		} else {
			i, rest = rest[0], rest[1:]
		}
		if p.rules[i].match(a) {
			return int(i)
		}
	}
	return -1
}

// match is the hot path: no allocation, no explanation.
func (r *rule) match(a *Attributes) bool {
	if len(r.from) > 0 && !anyAll(r.from, a) {
		return false
	}
	if len(r.to) > 0 && !anyAll(r.to, a) {
		return false
	}
	for i := range r.when {
		if !r.when[i].fn(a) {
			return false
		}
	}
	return true
}

func anyAll(groups [][]check, a *Attributes) bool {
	for _, g := range groups {
		ok := true
		for i := range g {
			if !g[i].fn(a) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// firstFailure returns the name of the first part of r that a does not
// satisfy, or "" if r matches.
func firstFailure(r *rule, a *Attributes) string {
	if len(r.from) > 0 {
		fail := ""
		for _, src := range r.from {
			if fail = allOf(src, a); fail == "" {
				break
			}
		}
		if fail != "" {
			return "from: " + fail
		}
	}
	if len(r.to) > 0 {
		fail := ""
		for _, op := range r.to {
			if fail = allOf(op, a); fail == "" {
				break
			}
		}
		if fail != "" {
			return "to: " + fail
		}
	}
	if f := allOf(r.when, a); f != "" {
		return "when: " + f
	}
	return ""
}

func allOf(cs []check, a *Attributes) string {
	for i := range cs {
		if !cs[i].fn(a) {
			return cs[i].name
		}
	}
	return ""
}

// compiler turns config policies into policies, collecting errors that
// name the file and key.
type compiler struct {
	errs []error
}

type where struct {
	file  string
	key   string // e.g. authz.policies[2] or spec
	istio bool   // spell keys as Istio does (camelCase)
}

func (c *compiler) errf(w where, key, format string, args ...any) {
	k := w.key
	if key != "" {
		if w.istio {
			key = camelKey(key)
		}
		k += "." + key
	}
	c.errs = append(c.errs, &configs.Error{File: w.file, Key: k, Msg: fmt.Sprintf(format, args...)})
}

// camelKey turns "rules[0].from[1].source.not_ip_blocks[2]" into Istio's
// "rules[0].from[1].source.notIpBlocks[2]".
func camelKey(k string) string {
	var b strings.Builder
	up := false
	for _, r := range k {
		switch {
		case r == '_':
			up = true
		case up:
			b.WriteString(strings.ToUpper(string(r)))
			up = false
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func (c *compiler) policy(cp *configs.Policy, w where) *policy {
	act, ok := parseAction(cp.Action)
	if !ok {
		c.errf(w, "action", "%q is not valid (use one of: ALLOW, DENY, AUDIT, CUSTOM)", cp.Action)
		return nil
	}
	p := &policy{name: cp.Name, action: act, dryRun: cp.DryRun, origin: cp.Origin}
	if cp.Selector != nil {
		p.selector = cp.Selector.MatchLabels
	}
	if act == ActionCustom && len(cp.Rules) == 0 {
		if w.istio {
			c.errf(w, "rules", "a CUSTOM policy needs rules (Istio never calls the provider without them; add rules: [{}] to call it for every request)")
		}
		p.matchAll = true
	}
	keys := make([][]string, len(cp.Rules))
	for i := range cp.Rules {
		p.rules = append(p.rules, c.rule(&cp.Rules[i], where{w.file, fmt.Sprintf("%s.rules[%d]", w.key, i), w.istio}))
		keys[i] = indexKeys(&cp.Rules[i])
	}
	p.buildIndex(keys)
	for i := range p.rules {
		p.reasons = append(p.reasons, fmt.Sprintf("%s policy %q rule %d matched", act, p.name, i))
	}
	return p
}

// indexKeys returns the first path segments one of which a request must
// have to match r, or nil when r cannot be indexed (some operation
// without paths, or a path pattern without a literal first segment).
func indexKeys(r *configs.Rule) []string {
	if len(r.To) == 0 {
		return nil
	}
	var keys []string
	for _, t := range r.To {
		if len(t.Operation.Paths) == 0 {
			return nil
		}
		for _, s := range t.Operation.Paths {
			m, err := istio.CompilePath(s)
			if err != nil {
				return nil
			}
			k, ok := m.FirstSegment()
			if !ok {
				return nil
			}
			keys = append(keys, k)
		}
	}
	return keys
}

func (c *compiler) rule(cr *configs.Rule, w where) rule {
	var r rule
	if b, err := json.Marshal(cr); err == nil {
		r.text = string(b)
	}
	for i, f := range cr.From {
		r.from = append(r.from, c.source(&f.Source, where{w.file, fmt.Sprintf("%s.from[%d].source", w.key, i), w.istio}))
	}
	for i, t := range cr.To {
		r.to = append(r.to, c.operation(&t.Operation, where{w.file, fmt.Sprintf("%s.to[%d].operation", w.key, i), w.istio}))
	}
	for i := range cr.When {
		if ch, ok := c.condition(&cr.When[i], where{w.file, fmt.Sprintf("%s.when[%d]", w.key, i), w.istio}); ok {
			r.when = append(r.when, ch...)
		}
	}
	return r
}

// values yields each value of an attribute to f and reports whether f
// returned true for any. A single-valued attribute yields once (absent
// as ""); a list yields each element (absent: none).
type values func(a *Attributes, f func(string) bool) bool

func one(get func(*Attributes) string) values {
	return func(a *Attributes, f func(string) bool) bool { return f(get(a)) }
}

func anyMatch(ms []istio.StringMatch) func(string) bool {
	return func(v string) bool {
		for i := range ms {
			if ms[i].Match(v) {
				return true
			}
		}
		return false
	}
}

// strField adds the checks for a values/not-values pair of string
// patterns.
func strField(out []check, name string, get values, vals, notVals []string, fold bool) []check {
	if len(vals) > 0 {
		ms := compileStrings(vals, fold)
		m := anyMatch(ms)
		out = append(out, check{name + " in " + patterns(vals), func(a *Attributes) bool { return get(a, m) }})
	}
	if len(notVals) > 0 {
		ms := compileStrings(notVals, fold)
		m := anyMatch(ms)
		out = append(out, check{"not_" + name + " " + patterns(notVals), func(a *Attributes) bool { return !get(a, m) }})
	}
	return out
}

func compileStrings(vals []string, fold bool) []istio.StringMatch {
	ms := make([]istio.StringMatch, len(vals))
	for i, v := range vals {
		ms[i] = istio.CompileString(v, fold)
	}
	return ms
}

func patterns(vals []string) string {
	const max = 5
	if len(vals) > max {
		return "[" + strings.Join(vals[:max], ", ") + fmt.Sprintf(", ... %d more]", len(vals)-max)
	}
	return "[" + strings.Join(vals, ", ") + "]"
}

func (c *compiler) prefixes(w where, key string, list []string) *ipset.Set {
	ps := make([]netip.Prefix, 0, len(list))
	for i, s := range list {
		p, err := configs.ParsePrefix(s)
		if err != nil {
			c.errf(w, fmt.Sprintf("%s[%d]", key, i), "%q is not a CIDR or IP address (e.g. \"10.0.0.0/8\", \"192.0.2.1\", \"2001:db8::/32\")", s)
			continue
		}
		ps = append(ps, p)
	}
	return ipset.New(ps)
}

func ipField(out []check, c *compiler, w where, name string, get func(*Attributes) netip.Addr, vals, notVals []string) []check {
	if len(vals) > 0 {
		set := c.prefixes(w, name, vals)
		out = append(out, check{name + " in " + patterns(vals), func(a *Attributes) bool { return set.Contains(get(a)) }})
	}
	if len(notVals) > 0 {
		set := c.prefixes(w, "not_"+name, notVals)
		out = append(out, check{"not_" + name + " " + patterns(notVals), func(a *Attributes) bool { return !set.Contains(get(a)) }})
	}
	return out
}

func sourceIP(a *Attributes) netip.Addr { return a.SourceIP }
func remoteIP(a *Attributes) netip.Addr { return a.remote() }

func (c *compiler) source(s *configs.Source, w where) []check {
	var out []check
	out = strField(out, "principals", one(func(a *Attributes) string { return a.Peer.Principal }), s.Principals, s.NotPrincipals, false)
	out = strField(out, "request_principals", one(func(a *Attributes) string { return a.RequestPrincipal }), s.RequestPrincipals, s.NotRequestPrincipals, false)
	out = strField(out, "namespaces", one(func(a *Attributes) string { return a.Peer.Namespace }), s.Namespaces, s.NotNamespaces, false)
	for i, sa := range append(append([]string(nil), s.ServiceAccounts...), s.NotServiceAccounts...) {
		if strings.Count(sa, "/") != 1 {
			key := fmt.Sprintf("service_accounts[%d]", i)
			if i >= len(s.ServiceAccounts) {
				key = fmt.Sprintf("not_service_accounts[%d]", i-len(s.ServiceAccounts))
			}
			c.errf(w, key, "%q must be NAMESPACE/SERVICE_ACCOUNT (e.g. default/bookinfo-productpage)", sa)
		}
	}
	out = strField(out, "service_accounts", one(func(a *Attributes) string {
		if a.Peer.ServiceAccount == "" {
			return ""
		}
		return a.Peer.Namespace + "/" + a.Peer.ServiceAccount
	}), s.ServiceAccounts, s.NotServiceAccounts, false)
	out = strField(out, "trust_domains", one(func(a *Attributes) string { return a.Peer.TrustDomain }), s.TrustDomains, s.NotTrustDomains, true)
	out = ipField(out, c, w, "ip_blocks", sourceIP, s.IPBlocks, s.NotIPBlocks)
	out = ipField(out, c, w, "remote_ip_blocks", remoteIP, s.RemoteIPBlocks, s.NotRemoteIPBlocks)
	if len(out) == 0 {
		c.errf(w, "", "is empty (a source needs at least one field; remove the from entry to match any source)")
	}
	return out
}

func hostValues(a *Attributes, f func(string) bool) bool {
	if f(a.Host) {
		return true
	}
	if h, _, ok := cutPort(a.Host); ok {
		return f(h)
	}
	return false
}

// cutPort splits "host:port" and "[v6]:port"; ok is false without a port.
func cutPort(hp string) (host, port string, ok bool) {
	i := strings.LastIndexByte(hp, ':')
	if i < 0 || strings.HasSuffix(hp[:i], ":") || (strings.Contains(hp[:i], ":") && !strings.HasSuffix(hp[:i], "]")) {
		return hp, "", false
	}
	host = strings.TrimSuffix(strings.TrimPrefix(hp[:i], "["), "]")
	return host, hp[i+1:], true
}

func (c *compiler) ports(w where, key string, list []string) map[int]bool {
	set := map[int]bool{}
	for i, s := range list {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 65535 {
			c.errf(w, fmt.Sprintf("%s[%d]", key, i), "%q is not a port (1-65535; Istio matches ports exactly)", s)
			continue
		}
		set[n] = true
	}
	return set
}

func (c *compiler) paths(w where, key string, list []string) []istio.StringMatch {
	ms := make([]istio.StringMatch, 0, len(list))
	for i, s := range list {
		m, err := istio.CompilePath(s)
		if err != nil {
			c.errf(w, fmt.Sprintf("%s[%d]", key, i), "%v", err)
			continue
		}
		ms = append(ms, m)
	}
	return ms
}

func (c *compiler) operation(o *configs.Operation, w where) []check {
	var out []check
	out = strField(out, "hosts", hostValues, o.Hosts, o.NotHosts, true)
	if len(o.Ports) > 0 {
		set := c.ports(w, "ports", o.Ports)
		out = append(out, check{"ports in " + patterns(o.Ports), func(a *Attributes) bool { return set[a.DestinationPort] }})
	}
	if len(o.NotPorts) > 0 {
		set := c.ports(w, "not_ports", o.NotPorts)
		out = append(out, check{"not_ports " + patterns(o.NotPorts), func(a *Attributes) bool { return !set[a.DestinationPort] }})
	}
	out = strField(out, "methods", one(func(a *Attributes) string { return a.Method }), o.Methods, o.NotMethods, false)
	if len(o.Paths) > 0 {
		m := anyMatch(c.paths(w, "paths", o.Paths))
		out = append(out, check{"paths in " + patterns(o.Paths), func(a *Attributes) bool { return m(a.Path) }})
	}
	if len(o.NotPaths) > 0 {
		m := anyMatch(c.paths(w, "not_paths", o.NotPaths))
		out = append(out, check{"not_paths " + patterns(o.NotPaths), func(a *Attributes) bool { return !m(a.Path) }})
	}
	if len(out) == 0 {
		c.errf(w, "", "is empty (an operation needs at least one field; remove the to entry to match any operation)")
	}
	return out
}

func (c *compiler) condition(cond *configs.Condition, w where) ([]check, bool) {
	k, err := istio.ParseKey(cond.Key)
	if err != nil {
		c.errf(w, "key", "%v", err)
		return nil, false
	}
	if len(cond.Values) == 0 && len(cond.NotValues) == 0 {
		c.errf(w, "values", "is required (or not_values)")
		return nil, false
	}
	name := cond.Key
	switch k.Kind {
	case istio.KeySourceIP, istio.KeyRemoteIP:
		get := sourceIP
		if k.Kind == istio.KeyRemoteIP {
			get = remoteIP
		}
		var out []check
		if len(cond.Values) > 0 {
			set := c.prefixes(w, "values", cond.Values)
			out = append(out, check{name + " in " + patterns(cond.Values), func(a *Attributes) bool { return set.Contains(get(a)) }})
		}
		if len(cond.NotValues) > 0 {
			set := c.prefixes(w, "not_values", cond.NotValues)
			out = append(out, check{name + " not in " + patterns(cond.NotValues), func(a *Attributes) bool { return !set.Contains(get(a)) }})
		}
		return out, true
	case istio.KeyDestinationPort:
		var out []check
		if len(cond.Values) > 0 {
			set := c.ports(w, "values", cond.Values)
			out = append(out, check{name + " in " + patterns(cond.Values), func(a *Attributes) bool { return set[a.DestinationPort] }})
		}
		if len(cond.NotValues) > 0 {
			set := c.ports(w, "not_values", cond.NotValues)
			out = append(out, check{name + " not in " + patterns(cond.NotValues), func(a *Attributes) bool { return !set[a.DestinationPort] }})
		}
		return out, true
	}
	var get values
	switch k.Kind {
	case istio.KeyClaim:
		path := k.Claim
		get = func(a *Attributes, f func(string) bool) bool { return claimValues(a.Claims, path, f) }
	case istio.KeyHeader:
		h := k.Header
		get = func(a *Attributes, f func(string) bool) bool {
			vs := a.Headers[h]
			if len(vs) == 0 {
				return f("")
			}
			for _, v := range vs {
				if f(v) {
					return true
				}
			}
			return false
		}
	case istio.KeyRequestPrincipal:
		get = one(func(a *Attributes) string { return a.RequestPrincipal })
	case istio.KeyAudiences:
		get = func(a *Attributes, f func(string) bool) bool {
			for _, v := range a.Audiences {
				if f(v) {
					return true
				}
			}
			return false
		}
	case istio.KeyPresenter:
		get = one(func(a *Attributes) string { return a.Presenter })
	case istio.KeySourcePrincipal:
		get = one(func(a *Attributes) string { return a.Peer.Principal })
	case istio.KeySourceNamespace:
		get = one(func(a *Attributes) string { return a.Peer.Namespace })
	case istio.KeySNI:
		get = one(func(a *Attributes) string { return a.SNI })
	default:
		c.errf(w, "key", "%q is not supported", cond.Key)
		return nil, false
	}
	var out []check
	if len(cond.Values) > 0 {
		m := anyMatch(compileStrings(cond.Values, false))
		out = append(out, check{name + " in " + patterns(cond.Values), func(a *Attributes) bool { return get(a, m) }})
	}
	if len(cond.NotValues) > 0 {
		m := anyMatch(compileStrings(cond.NotValues, false))
		out = append(out, check{name + " not in " + patterns(cond.NotValues), func(a *Attributes) bool { return !get(a, m) }})
	}
	return out, true
}

// claimValues yields the claim at path: a string, each element of a
// list, or a number or bool in its JSON spelling. Absent yields nothing.
func claimValues(claims map[string]any, path []string, f func(string) bool) bool {
	var v any = claims
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = m[p]; !ok {
			return false
		}
	}
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			if s, ok := scalar(e); ok && f(s) {
				return true
			}
		}
		return false
	case []string:
		for _, s := range x {
			if f(s) {
				return true
			}
		}
		return false
	}
	if s, ok := scalar(v); ok {
		return f(s)
	}
	return false
}

func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case int:
		return strconv.Itoa(x), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case json.Number:
		return x.String(), true
	}
	return "", false
}
