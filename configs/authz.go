package configs

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// Policy actions, spelled as Istio's AuthorizationPolicy spells them.
const (
	ActionAllow  = "ALLOW"
	ActionDeny   = "DENY"
	ActionAudit  = "AUDIT"
	ActionCustom = "CUSTOM"
)

// Authz configures authorization: Istio-style policies, Rego policies and
// external authorization services. The whole section is compiled on every
// load and reload (authz.New); a compile error keeps the old policies.
type Authz struct {
	// PoliciesDir is a directory of Istio YAML documents
	// (AuthorizationPolicy, security.istio.io/v1 or v1beta1), loaded as
	// they are. Files ending in .yaml or .yml are read, in name order.
	// Empty (default) loads none.
	PoliciesDir string `mapstructure:"policies_dir" json:"policies_dir,omitempty"`

	// RegoTimeout is the default deadline of one Rego evaluation
	// (default 100ms). An evaluation past it denies.
	RegoTimeout time.Duration `mapstructure:"rego_timeout" json:"rego_timeout"`

	// DecisionLog says which decisions are logged. Denies and AUDIT
	// matches always are.
	DecisionLog DecisionLog `mapstructure:"decision_log" json:"decision_log"`

	// CustomProviders are external authorization services that CUSTOM
	// policies name in provider.
	CustomProviders []CustomProvider `mapstructure:"custom_providers" json:"custom_providers,omitempty"`

	// Policies are the authorization policies. A policy that no listener
	// or route names and that has no selector applies to every request.
	Policies []Policy `mapstructure:"policies" json:"policies,omitempty"`

	// IstioAuthnMerged records that the RequestAuthentication documents
	// of PoliciesDir were merged into Authn.JWT (istio.MergeAuthn), so the
	// policy loader skips them. Not a key.
	IstioAuthnMerged bool `mapstructure:"-" json:"-"`
}

// DecisionLog selects what the decision log records.
type DecisionLog struct {
	// Allowed logs allowed requests too (default false: denies, AUDIT
	// matches and dry-run results only).
	Allowed bool `mapstructure:"allowed" json:"allowed"`
	// RegoInput includes the (redacted) Rego input document in Rego
	// decision records (default false).
	RegoInput bool `mapstructure:"rego_input" json:"rego_input"`
}

// CustomProvider is an external authorization service, called like
// Envoy's ext_authz HTTP service: a forward-auth style request; a 2xx
// answer allows, anything else denies with that status.
type CustomProvider struct {
	Name string        `mapstructure:"name" json:"name"`
	HTTP *HTTPProvider `mapstructure:"http" json:"http,omitempty"`
}

// HTTPProvider is a forward-auth HTTP authorization service.
type HTTPProvider struct {
	// URL is the service's base URL; the request's path is appended
	// (http:// is allowed only for loopback addresses).
	URL string `mapstructure:"url" json:"url"`
	// Timeout bounds one check (default 200ms).
	Timeout time.Duration `mapstructure:"timeout" json:"timeout"`
	// FailOpen allows the request when the service cannot be reached
	// or times out (default false: deny).
	FailOpen bool `mapstructure:"fail_open" json:"fail_open"`
	// StatusOnError is the status returned to the client when the
	// service fails and fail_open is false (default 403).
	StatusOnError int `mapstructure:"status_on_error" json:"status_on_error"`
	// IncludeRequestHeaders are the request headers sent to the service
	// (default: authorization, cookie, x-forwarded-for, x-request-id).
	IncludeRequestHeaders []string `mapstructure:"include_request_headers" json:"include_request_headers,omitempty"`
	// HeadersToUpstream are the service's response headers copied to the
	// upstream request when it allows (default none).
	HeadersToUpstream []string `mapstructure:"headers_to_upstream" json:"headers_to_upstream,omitempty"`
	// HeadersToClient are the service's response headers copied to the
	// client's deny response (default none).
	HeadersToClient []string `mapstructure:"headers_to_client" json:"headers_to_client,omitempty"`
}

// Policy is one authorization policy, shaped like Istio's
// AuthorizationPolicy (keys in snake_case).
type Policy struct {
	Name string `mapstructure:"name" json:"name"`
	// Action is ALLOW (default), DENY, AUDIT or CUSTOM (default when rego
	// or provider is set).
	Action string `mapstructure:"action" json:"action"`
	// DryRun evaluates and logs the policy with the result it would have
	// had, but does not enforce it (Istio's istio.io/dry-run).
	DryRun bool `mapstructure:"dry_run" json:"dry_run,omitempty"`
	// Selector attaches the policy to the routes whose labels contain
	// every one of MatchLabels.
	Selector *Selector `mapstructure:"selector" json:"selector,omitempty"`
	// Provider names a custom_providers entry (CUSTOM only).
	Provider string `mapstructure:"provider" json:"provider,omitempty"`
	// Rego makes this a CUSTOM policy decided by an OPA query.
	Rego *Rego `mapstructure:"rego" json:"rego,omitempty"`
	// Rules: a request matches the policy if it matches any rule. An
	// ALLOW policy with no rules matches nothing (so denies all); an
	// empty rule {} matches everything.
	Rules []Rule `mapstructure:"rules" json:"rules,omitempty"`

	// Origin is where the policy came from when not from the main file:
	// "policies.d/x.yaml (AuthorizationPolicy ns/name)". Not a key.
	Origin string `mapstructure:"-" json:"-"`
}

// Selector selects routes by their labels.
type Selector struct {
	MatchLabels map[string]string `mapstructure:"match_labels" json:"match_labels"`
}

// Rego is an OPA policy evaluated in process.
type Rego struct {
	// Files are .rego modules (at least one of files and bundle).
	Files []string `mapstructure:"files" json:"files,omitempty"`
	// Bundle is an OPA bundle directory or .tar.gz.
	Bundle string `mapstructure:"bundle" json:"bundle,omitempty"`
	// Data is an optional JSON file loaded as data.
	Data string `mapstructure:"data" json:"data,omitempty"`
	// Query is the rule to evaluate, e.g. data.envoy.authz.allow. Its
	// value is a bool or an object {allowed, headers, response_headers,
	// http_status, body}.
	Query string `mapstructure:"query" json:"query"`
	// Timeout overrides authz.rego_timeout for this policy.
	Timeout time.Duration `mapstructure:"timeout" json:"timeout,omitempty"`
}

// Rule matches a request when all of From (any source), To (any
// operation) and When (every condition) match. Unset parts match all.
type Rule struct {
	From []From      `mapstructure:"from" json:"from,omitempty"`
	To   []To        `mapstructure:"to" json:"to,omitempty"`
	When []Condition `mapstructure:"when" json:"when,omitempty"`
}

// From wraps a Source, as in Istio.
type From struct {
	Source Source `mapstructure:"source" json:"source"`
}

// Source matches the caller. Values in one field are OR'd; fields are AND'd.
type Source struct {
	Principals           []string `mapstructure:"principals" json:"principals,omitempty"`
	NotPrincipals        []string `mapstructure:"not_principals" json:"not_principals,omitempty"`
	RequestPrincipals    []string `mapstructure:"request_principals" json:"request_principals,omitempty"`
	NotRequestPrincipals []string `mapstructure:"not_request_principals" json:"not_request_principals,omitempty"`
	Namespaces           []string `mapstructure:"namespaces" json:"namespaces,omitempty"`
	NotNamespaces        []string `mapstructure:"not_namespaces" json:"not_namespaces,omitempty"`
	ServiceAccounts      []string `mapstructure:"service_accounts" json:"service_accounts,omitempty"`
	NotServiceAccounts   []string `mapstructure:"not_service_accounts" json:"not_service_accounts,omitempty"`
	TrustDomains         []string `mapstructure:"trust_domains" json:"trust_domains,omitempty"`
	NotTrustDomains      []string `mapstructure:"not_trust_domains" json:"not_trust_domains,omitempty"`
	IPBlocks             []string `mapstructure:"ip_blocks" json:"ip_blocks,omitempty"`
	NotIPBlocks          []string `mapstructure:"not_ip_blocks" json:"not_ip_blocks,omitempty"`
	RemoteIPBlocks       []string `mapstructure:"remote_ip_blocks" json:"remote_ip_blocks,omitempty"`
	NotRemoteIPBlocks    []string `mapstructure:"not_remote_ip_blocks" json:"not_remote_ip_blocks,omitempty"`
}

// To wraps an Operation, as in Istio.
type To struct {
	Operation Operation `mapstructure:"operation" json:"operation"`
}

// Operation matches what is asked for.
type Operation struct {
	Hosts      []string `mapstructure:"hosts" json:"hosts,omitempty"`
	NotHosts   []string `mapstructure:"not_hosts" json:"not_hosts,omitempty"`
	Ports      []string `mapstructure:"ports" json:"ports,omitempty"`
	NotPorts   []string `mapstructure:"not_ports" json:"not_ports,omitempty"`
	Methods    []string `mapstructure:"methods" json:"methods,omitempty"`
	NotMethods []string `mapstructure:"not_methods" json:"not_methods,omitempty"`
	Paths      []string `mapstructure:"paths" json:"paths,omitempty"`
	NotPaths   []string `mapstructure:"not_paths" json:"not_paths,omitempty"`
}

// Condition is one Istio "when" entry: key is e.g.
// request.auth.claims[groups] or request.headers[x-token].
type Condition struct {
	Key       string   `mapstructure:"key" json:"key"`
	Values    []string `mapstructure:"values" json:"values,omitempty"`
	NotValues []string `mapstructure:"not_values" json:"not_values,omitempty"`
}

func (a *Authz) setDefaults() {
	if a.RegoTimeout == 0 {
		a.RegoTimeout = 100 * time.Millisecond
	}
	for i := range a.CustomProviders {
		if h := a.CustomProviders[i].HTTP; h != nil {
			if h.Timeout == 0 {
				h.Timeout = 200 * time.Millisecond
			}
			if h.StatusOnError == 0 {
				h.StatusOnError = 403
			}
			if h.IncludeRequestHeaders == nil {
				h.IncludeRequestHeaders = []string{"authorization", "cookie", "x-forwarded-for", "x-request-id"}
			}
		}
	}
	for i := range a.Policies {
		a.Policies[i].SetDefaults()
	}
}

// SetDefaults fills the action: CUSTOM for rego/provider policies,
// ALLOW otherwise. Action names are upper-cased.
func (p *Policy) SetDefaults() {
	p.Action = strings.ToUpper(p.Action)
	if p.Action == "" {
		if p.Rego != nil || p.Provider != "" {
			p.Action = ActionCustom
		} else {
			p.Action = ActionAllow
		}
	}
}

func (a *Authz) validate(v *validator, c *Config) {
	if a.PoliciesDir != "" {
		if st, err := os.Stat(a.PoliciesDir); err != nil {
			v.addf("policies_dir", "%q cannot be read: %v", a.PoliciesDir, unwrapPathError(err))
		} else if !st.IsDir() {
			v.addf("policies_dir", "%q is not a directory", a.PoliciesDir)
		}
	}
	if a.RegoTimeout < 0 {
		v.addf("rego_timeout", "%s must not be negative", a.RegoTimeout)
	}
	providers := make([]string, len(a.CustomProviders))
	for i, cp := range a.CustomProviders {
		providers[i] = cp.Name
		pv := v.index("custom_providers", i)
		if cp.Name == "" {
			pv.addf("name", "is required")
		}
		if cp.HTTP == nil {
			pv.addf("http", "is required (the external authorization service: http: {url: ...})")
			continue
		}
		h := cp.HTTP
		if u, err := url.Parse(h.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			pv.addf("http.url", "%q is not an http:// or https:// URL", h.URL)
		}
		if h.Timeout < 0 {
			pv.addf("http.timeout", "%s must not be negative", h.Timeout)
		}
		if h.StatusOnError < 200 || h.StatusOnError > 599 {
			pv.addf("http.status_on_error", "%d is not an HTTP status (200-599)", h.StatusOnError)
		}
	}
	v.unique("custom_providers", "custom provider", providers)
	names := make([]string, len(a.Policies))
	for i := range a.Policies {
		p := &a.Policies[i]
		names[i] = p.Name
		p.validate(v.index("policies", i), providers)
	}
	v.unique("policies", "policy", names)
}

// validate checks one policy; providers are the custom provider names.
func (p *Policy) validate(v *validator, providers []string) {
	if p.Name == "" {
		v.addf("name", "is required (a short name used by listeners, routes, logs and metrics)")
	}
	if !v.oneOf("action", p.Action, ActionAllow, ActionDeny, ActionAudit, ActionCustom) {
		return
	}
	switch {
	case p.Rego != nil && p.Provider != "":
		v.addf("rego", "cannot be combined with provider (a CUSTOM policy has one decider)")
	case p.Action == ActionCustom && p.Rego == nil && p.Provider == "":
		v.addf("action", "CUSTOM needs rego: {...} or provider: <custom_providers name>")
	case p.Action != ActionCustom && (p.Rego != nil || p.Provider != ""):
		v.addf("action", "%s cannot use rego or provider (use action CUSTOM)", p.Action)
	}
	// provider names are checked by authz.New, which also knows the
	// providers the binary registers itself (authz.Deps.Custom).
	if r := p.Rego; r != nil {
		rv := v.at("rego")
		if len(r.Files) == 0 && r.Bundle == "" {
			rv.addf("files", "is required (the .rego modules), or set bundle")
		}
		for i, f := range r.Files {
			rv.file(fmt.Sprintf("files[%d]", i), f)
		}
		if r.Bundle != "" {
			if _, err := os.Stat(r.Bundle); err != nil {
				rv.addf("bundle", "%q cannot be read: %v", r.Bundle, unwrapPathError(err))
			}
		}
		if r.Data != "" {
			rv.file("data", r.Data)
		}
		if !strings.HasPrefix(r.Query, "data.") {
			rv.addf("query", "%q must name a rule under data, e.g. data.envoy.authz.allow", r.Query)
		}
		if r.Timeout < 0 {
			rv.addf("timeout", "%s must not be negative", r.Timeout)
		}
	}
	if p.Selector != nil && len(p.Selector.MatchLabels) == 0 {
		v.addf("selector.match_labels", "is empty (remove selector to apply the policy everywhere)")
	}
	for i, r := range p.Rules {
		rv := v.index("rules", i)
		for j, f := range r.From {
			sv := rv.index("from", j).at("source")
			s := f.Source
			for _, f := range []struct {
				key  string
				list []string
			}{
				{"ip_blocks", s.IPBlocks}, {"not_ip_blocks", s.NotIPBlocks},
				{"remote_ip_blocks", s.RemoteIPBlocks}, {"not_remote_ip_blocks", s.NotRemoteIPBlocks},
			} {
				for k, c := range f.list {
					sv.prefix(fmt.Sprintf("%s[%d]", f.key, k), c)
				}
			}
		}
		for j, w := range r.When {
			wv := rv.index("when", j)
			if w.Key == "" {
				wv.addf("key", "is required (e.g. request.auth.claims[groups])")
			}
			if len(w.Values) == 0 && len(w.NotValues) == 0 {
				wv.addf("values", "is required (or not_values)")
			}
		}
	}
}

// policyRefs checks references to policies by name. Build it once per
// list of references: 10,000 routes each naming one of 10,000 policies
// made a scan per reference the largest part of a reload.
type policyRefs struct {
	known map[string]struct{}
	names []string
	// open: policies_dir is set, and a name may come from an Istio
	// document there, which only authz.New reads; it checks again.
	open bool
}

func (a *Authz) policyRefs() policyRefs {
	r := policyRefs{known: make(map[string]struct{}, len(a.Policies)), names: make([]string, len(a.Policies)), open: a.PoliciesDir != ""}
	for i, p := range a.Policies {
		r.known[p.Name] = struct{}{}
		r.names[i] = p.Name
	}
	return r
}

// check records a reference to a policy that does not exist.
func (r policyRefs) check(v *validator, name string) {
	if _, ok := r.known[name]; ok || r.open {
		return
	}
	v.reference("", "policy", name, r.names)
}
