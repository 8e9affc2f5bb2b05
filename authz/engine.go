package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/authz/istio"
	"github.com/ztgate/ztgate/configs"
)

// Deps are the long-lived things an Engine uses. Logger and Metrics live
// for the process; a new Engine is built on every reload with the same
// Deps.
type Deps struct {
	Logger *slog.Logger
	// Metrics registers ztgate_authz_* collectors; registering twice
	// (a reload) reuses the collectors already there. Nil: not counted.
	Metrics prometheus.Registerer
	// Custom are extra named providers for CUSTOM policies' provider
	// key; they take precedence over custom_providers of the same name.
	Custom map[string]CustomProvider
	// Rego prepares rego policies (rego.Compiler). Nil refuses configs
	// that use Rego.
	Rego RegoCompiler
	// HTTP builds custom_providers entries (extauthz.Factory). Nil
	// refuses configs that declare them.
	HTTP HTTPProviderFactory
}

// Engine decides requests against one compiled config. It is immutable
// and safe for concurrent use; build a new one on every reload and swap
// it in with an atomic.Pointer.
type Engine struct {
	log      *slog.Logger
	m        *metrics
	logAllow bool
	logInput bool

	policies    []*policy
	global      []*policy
	byListener  map[string][]*policy
	byRoute     map[string][]*policy
	selected    []*policy // policies with a selector
	routeLabels map[string]map[string]string
	sets        map[setKey]*policySet
	counters    map[counterKey]prometheus.Counter
	owned       []CustomProvider // built by New from custom_providers
}

type setKey struct{ listener, route string }

// policySet is the policies that apply to one listener and route, split
// by action; shadow adds the dry-run policies as if enforced.
type policySet struct {
	custom, deny, allow, audit []*policy
	shadow                     *policySet
	dryRun                     []*policy
	noAllow                    string // the reason when no ALLOW matches
}

// New compiles the authz section of cfg (and policies_dir) into an
// Engine. Every problem is returned at once, each naming file and key.
func New(cfg *configs.Config, deps Deps) (*Engine, error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		log:         log,
		m:           newMetrics(deps.Metrics),
		logAllow:    cfg.Authz.DecisionLog.Allowed,
		logInput:    cfg.Authz.DecisionLog.RegoInput,
		byListener:  map[string][]*policy{},
		byRoute:     map[string][]*policy{},
		routeLabels: map[string]map[string]string{},
		sets:        map[setKey]*policySet{},
	}
	c := &compiler{}
	file := cfg.File
	if file == "" {
		file = "<config>"
	}
	az := &cfg.Authz

	providers := map[string]CustomProvider{}
	for i := range az.CustomProviders {
		cp := &az.CustomProviders[i]
		if _, ok := deps.Custom[cp.Name]; ok {
			continue
		}
		w := where{file: file, key: fmt.Sprintf("authz.custom_providers[%d]", i)}
		if deps.HTTP == nil || cp.HTTP == nil {
			c.errf(w, "http", "external authorization is not available in this build (authz.Deps.HTTP is nil)")
			continue
		}
		p, err := deps.HTTP(cp.Name, cp.HTTP)
		if err != nil {
			c.errf(w, "http", "%v", err)
			continue
		}
		providers[cp.Name] = p
		e.owned = append(e.owned, p)
	}
	for name, p := range deps.Custom {
		providers[name] = p
	}

	type src struct {
		cp *configs.Policy
		w  where
	}
	var all []src
	for i := range az.Policies {
		all = append(all, src{&az.Policies[i], where{file: file, key: fmt.Sprintf("authz.policies[%d]", i)}})
	}
	if az.PoliciesDir != "" {
		docs, err := istio.LoadDir(az.PoliciesDir, providerNames(az, deps), az.IstioAuthnMerged)
		if err != nil {
			c.errs = append(c.errs, err)
		}
		for i := range docs {
			all = append(all, src{&docs[i].Policy, where{file: docs[i].File, key: docs[i].Key, istio: true}})
		}
	}
	byName := map[string]*policy{}
	for _, s := range all {
		p := c.policy(s.cp, s.w)
		if p == nil {
			continue
		}
		if prev, dup := byName[p.name]; dup {
			c.errf(s.w, "name", "policy %q is already defined (%s)", p.name, originOf(prev, file))
			continue
		}
		if p.origin == "" {
			p.origin = file
		}
		switch {
		case s.cp.Rego != nil:
			if deps.Rego == nil {
				c.errf(s.w, "rego", "Rego is not available in this build (authz.Deps.Rego is nil)")
				continue
			}
			prov, err := deps.Rego(p.name, s.cp.Rego, az.RegoTimeout)
			if err != nil {
				c.errf(s.w, "rego", "%v", err)
				continue
			}
			p.custom, p.provider = prov, "rego"
			e.owned = append(e.owned, prov)
		case s.cp.Provider != "":
			prov, ok := providers[s.cp.Provider]
			if !ok {
				c.errf(s.w, "provider", "custom provider %q is not defined in authz.custom_providers", s.cp.Provider)
				continue
			}
			p.custom, p.provider = prov, s.cp.Provider
		}
		byName[p.name] = p
		e.policies = append(e.policies, p)
	}

	// Attachment: listeners[].policies, routes[].policies, selectors;
	// a policy attached nowhere applies to every request.
	attached := map[*policy]bool{}
	ref := func(w where, name string) *policy {
		p, ok := byName[name]
		if !ok {
			c.errf(w, "", "policy %q is not defined (in authz.policies or policies_dir)", name)
		}
		return p
	}
	for i, l := range cfg.Listeners {
		for j, name := range l.Policies {
			if p := ref(where{file: file, key: fmt.Sprintf("listeners[%d].policies[%d]", i, j)}, name); p != nil {
				e.byListener[l.Name] = append(e.byListener[l.Name], p)
				attached[p] = true
			}
		}
	}
	for i, r := range cfg.Routes {
		e.routeLabels[r.Name] = r.Labels
		for j, name := range r.Policies {
			if p := ref(where{file: file, key: fmt.Sprintf("routes[%d].policies[%d]", i, j)}, name); p != nil {
				e.byRoute[r.Name] = append(e.byRoute[r.Name], p)
				attached[p] = true
			}
		}
	}
	for _, p := range e.policies {
		switch {
		case p.selector != nil:
			e.selected = append(e.selected, p)
		case !attached[p]:
			e.global = append(e.global, p)
		}
	}
	if len(c.errs) > 0 {
		e.Close() // release the providers built before the failure
		return nil, errors.Join(c.errs...)
	}
	e.buildCounters()
	// Precompute the set for every listener × route the config can
	// produce, so Decide only does a map lookup.
	for _, r := range cfg.Routes {
		ls := r.Listeners
		if len(ls) == 0 {
			for _, l := range cfg.Listeners {
				ls = append(ls, l.Name)
			}
		}
		for _, l := range ls {
			e.sets[setKey{l, r.Name}] = e.buildSet(l, r.Name, r.Labels)
		}
	}
	return e, nil
}

func originOf(p *policy, file string) string {
	if p.origin == "" {
		return file
	}
	return p.origin
}

func providerNames(az *configs.Authz, deps Deps) []string {
	var names []string
	for _, cp := range az.CustomProviders {
		names = append(names, cp.Name)
	}
	for n := range deps.Custom {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (e *Engine) buildSet(listener, route string, labels map[string]string) *policySet {
	seen := map[*policy]bool{}
	var ps []*policy
	add := func(list []*policy) {
		for _, p := range list {
			if !seen[p] {
				seen[p] = true
				ps = append(ps, p)
			}
		}
	}
	add(e.global)
	add(e.byListener[listener])
	add(e.byRoute[route])
	for _, p := range e.selected {
		if selects(p.selector, labels) {
			add([]*policy{p})
		}
	}
	set, shadow := &policySet{}, &policySet{}
	for _, p := range ps {
		shadow.add(p)
		if p.dryRun {
			set.dryRun = append(set.dryRun, p)
			continue
		}
		set.add(p)
	}
	if len(set.dryRun) > 0 {
		set.shadow = shadow
	}
	set.finish()
	shadow.finish()
	return set
}

func (s *policySet) finish() {
	names := make([]string, len(s.allow))
	for i, p := range s.allow {
		names[i] = p.name
	}
	s.noAllow = fmt.Sprintf("no ALLOW policy matched (applicable: %s)", patterns(names))
}

func (s *policySet) add(p *policy) {
	switch p.action {
	case ActionCustom:
		s.custom = append(s.custom, p)
	case ActionDeny:
		s.deny = append(s.deny, p)
	case ActionAllow:
		s.allow = append(s.allow, p)
	case ActionAudit:
		s.audit = append(s.audit, p)
	}
}

func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func (e *Engine) setFor(a *Attributes) *policySet {
	if s, ok := e.sets[setKey{a.Listener, a.Route}]; ok {
		return s
	}
	labels := a.RouteLabels
	if l, ok := e.routeLabels[a.Route]; ok && labels == nil {
		labels = l
	}
	return e.buildSet(a.Listener, a.Route, labels)
}

// Close releases what the Engine's providers hold (idle connections of
// external authorization clients it built from custom_providers). Call it
// after a reload has swapped in the next Engine and in-flight requests on
// this one have finished; Decide must not be called afterwards.
func (e *Engine) Close() {
	for _, p := range e.owned {
		if c, ok := p.(interface{ Close() }); ok {
			c.Close()
		}
	}
}

// Policies returns the names of the compiled policies, in load order.
func (e *Engine) Policies() []string {
	out := make([]string, len(e.policies))
	for i, p := range e.policies {
		out[i] = p.name
	}
	return out
}

// Decide evaluates a against the policies that apply to its listener and
// route: CUSTOM, then DENY, then ALLOW; AUDIT and dry-run policies are
// evaluated and recorded. It records the decision (log and metrics) and
// returns it. Safe for concurrent use.
func (e *Engine) Decide(ctx context.Context, a *Attributes) Decision {
	d := e.decide(ctx, a, false)
	e.record(a, &d)
	return d
}

// DecideExplain is Decide with a step-by-step trace in Decision.Trace,
// for `ztgate policy check`. It is slower; do not use it per request.
func (e *Engine) DecideExplain(ctx context.Context, a *Attributes) Decision {
	d := e.decide(ctx, a, true)
	e.record(a, &d)
	return d
}

type evalState struct {
	explain bool // DecideExplain: record trace
	trace   []string
	// CUSTOM results so far, reused by the shadow run; a request asks
	// few providers, so a short list in place (no allocation for up to
	// two) beats a map.
	outcomes [2]customOutcome
	n        int
	more     []customOutcome
}

type customOutcome struct {
	p   *policy
	res CustomResult
	err error
}

// outcome is p's result if it was already asked during this request.
func (st *evalState) outcome(p *policy) (customOutcome, bool) {
	for i := range st.n {
		if st.outcomes[i].p == p {
			return st.outcomes[i], true
		}
	}
	for i := range st.more {
		if st.more[i].p == p {
			return st.more[i], true
		}
	}
	return customOutcome{}, false
}

func (st *evalState) remember(o customOutcome) {
	if st.n < len(st.outcomes) {
		st.outcomes[st.n] = o
		st.n++
		return
	}
	st.more = append(st.more, o)
}

// opa is the Rego evaluations of this request, in the order they ran.
func (st *evalState) opa() []*OPARecord {
	var out []*OPARecord
	for _, o := range append(st.outcomes[:st.n:st.n], st.more...) {
		if o.res.OPA != nil {
			out = append(out, o.res.OPA)
		}
	}
	return out
}

// tracef adds a step to DecideExplain's trace. Call it under
// `if st.explain`, so a plain Decide does not box its arguments.
func (st *evalState) tracef(format string, args ...any) {
	st.trace = append(st.trace, fmt.Sprintf(format, args...))
}

func (e *Engine) decide(ctx context.Context, a *Attributes, explain bool) Decision {
	set := e.setFor(a)
	st := &evalState{explain: explain}
	d := e.evaluate(ctx, set, a, st)
	d.RequestID = a.RequestID
	for _, p := range set.audit {
		if i := p.match(a); i >= 0 {
			d.Audit = append(d.Audit, Match{Policy: p.name, Action: ActionAudit, Rule: i})
			if st.explain {
				st.tracef("AUDIT %q rule %d matched (logged only)", p.name, i)
			}
		} else {
			e.traceMiss(st, p, a)
		}
	}
	if set.shadow != nil {
		if st.explain {
			st.tracef("dry-run: evaluating again with the dry-run policies enforced")
		}
		sd := e.evaluate(ctx, set.shadow, a, st)
		sh := &Shadow{Allowed: sd.Allowed, Action: sd.Action, Policy: sd.Policy, Rule: sd.Rule, Reason: sd.Reason}
		for _, p := range set.dryRun {
			i := p.match(a)
			if i >= 0 || p.matchAll {
				sh.Matched = append(sh.Matched, Match{Policy: p.name, Action: p.action, Rule: i})
			}
		}
		d.DryRun = sh
	}
	if explain {
		d.Trace = st.trace
	}
	e.lastOPA(st, a, &d)
	return d
}

func (e *Engine) traceMiss(st *evalState, p *policy, a *Attributes) {
	if !st.explain {
		return
	}
	if len(p.rules) == 0 {
		st.tracef("%s %q has no rules: matches nothing", p.action, p.name)
		return
	}
	for i := range p.rules {
		st.tracef("%s %q rule %d did not match: %s", p.action, p.name, i, firstFailure(&p.rules[i], a))
	}
}

func deny(p *policy, rule int, status int, reason string) Decision {
	if status == 0 {
		status = 403
	}
	return Decision{Action: p.action, Policy: p.name, Rule: rule, Status: status, Reason: reason}
}

// evaluate is the enforcement order. The deny branches come first and
// every error ends in a deny.
func (e *Engine) evaluate(ctx context.Context, set *policySet, a *Attributes, st *evalState) Decision {
	var upstream, response []Header
	var customAllowed *policy
	// 1. CUSTOM: every applicable provider must allow (Istio allows only
	// one provider per workload; ztgate asks each in order).
	for _, p := range set.custom {
		rule := -1
		if !p.matchAll {
			if rule = p.match(a); rule < 0 {
				e.traceMiss(st, p, a)
				continue
			}
		}
		out, done := st.outcome(p)
		if !done {
			res, err := p.custom.Check(ctx, a)
			out = customOutcome{p, res, err}
			st.remember(out)
			if err != nil {
				e.m.errors.WithLabelValues(p.name, p.provider).Inc()
			}
		}
		if out.err != nil {
			if st.explain {
				st.tracef("CUSTOM %q (%s) failed, so deny: %v", p.name, p.provider, out.err)
			}
			d := deny(p, rule, out.res.Status, fmt.Sprintf("CUSTOM policy %q: %s failed (fail closed): %v", p.name, p.provider, out.err))
			d.ResponseHeaders = response
			return d
		}
		response = append(response, out.res.ResponseHeaders...)
		if !out.res.Allowed {
			reason := fmt.Sprintf("CUSTOM policy %q: %s denied", p.name, p.provider)
			if out.res.Reason != "" {
				reason += ": " + out.res.Reason
			}
			if st.explain {
				st.tracef("%s", reason)
			}
			d := deny(p, rule, out.res.Status, reason)
			d.Body, d.ResponseHeaders = out.res.Body, response
			return d
		}
		if st.explain {
			st.tracef("CUSTOM %q (%s) allowed %s", p.name, p.provider, out.res.Reason)
		}
		upstream = append(upstream, out.res.UpstreamHeaders...)
		customAllowed = p
	}
	// 2. DENY: any matching rule denies.
	for _, p := range set.deny {
		if i := p.match(a); i >= 0 {
			if st.explain {
				st.tracef("DENY %q rule %d matched: %s", p.name, i, p.rules[i].text)
			}
			d := deny(p, i, 403, p.reasons[i])
			d.ResponseHeaders = response
			return d
		}
		e.traceMiss(st, p, a)
	}
	// 3. ALLOW: if any applies, one must match.
	if len(set.allow) > 0 {
		for _, p := range set.allow {
			if i := p.match(a); i >= 0 {
				if st.explain {
					st.tracef("ALLOW %q rule %d matched: %s", p.name, i, p.rules[i].text)
				}
				return Decision{Allowed: true, Action: ActionAllow, Policy: p.name, Rule: i, Status: 200,
					Reason: p.reasons[i], UpstreamHeaders: upstream, ResponseHeaders: response}
			}
			e.traceMiss(st, p, a)
		}
		d := deny(set.allow[0], -1, 403, set.noAllow)
		d.Policy = ""
		d.ResponseHeaders = response
		if st.explain {
			st.tracef("%s", d.Reason)
		}
		return d
	}
	d := Decision{Allowed: true, Rule: -1, Status: 200, UpstreamHeaders: upstream, ResponseHeaders: response}
	if customAllowed != nil {
		d.Action, d.Policy = ActionCustom, customAllowed.name
		d.Reason = fmt.Sprintf("CUSTOM policy %q allowed and no DENY or ALLOW policy applies", customAllowed.name)
	} else {
		d.Reason = "no DENY matched and no ALLOW policy applies"
	}
	if st.explain {
		st.tracef("%s", d.Reason)
	}
	return d
}
