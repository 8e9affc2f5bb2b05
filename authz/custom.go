package authz

import (
	"context"
	"time"

	"github.com/ztgate/ztgate/configs"
)

// CustomProvider decides for a CUSTOM policy: Rego (authz/rego) or an
// external authorization service (authz/extauthz). Check must honour
// ctx's deadline. An error denies (fail closed); a provider that fails
// open handles that itself and returns an allowing result. With an
// error, a non-zero Result.Status is still used for the deny
// (status_on_error).
type CustomProvider interface {
	Check(ctx context.Context, a *Attributes) (CustomResult, error)
}

// CustomResult is a provider's answer.
type CustomResult struct {
	Allowed bool
	// Status is the client status on deny (0: 403).
	Status int
	// UpstreamHeaders are added to the upstream request on allow.
	UpstreamHeaders []Header
	// ResponseHeaders are added to the response to the client.
	ResponseHeaders []Header
	// Body replaces the deny body (the provider's own, operator-chosen text).
	Body string
	// Reason is a short human explanation ("fail_open: timeout").
	Reason string
	// OPA is the evaluation's record in OPA's decision-log layout
	// (Rego providers only).
	OPA *OPARecord
}

// OPARecord is one Rego evaluation in OPA's decision-log field layout.
// Providers fill it cheaply on every evaluation; what only a written
// record needs is made when it is written: a DecisionID left empty is
// assigned then, and Metrics left nil is built from EvalTime.
type OPARecord struct {
	DecisionID string         `json:"decision_id"`
	Path       string         `json:"path"`
	Input      any            `json:"input,omitempty"`
	Result     any            `json:"result"`
	Metrics    map[string]any `json:"metrics,omitempty"`
	Error      string         `json:"error,omitempty"`
	// EvalTime is how long the query took (metrics
	// timer_rego_query_eval_ns).
	EvalTime time.Duration `json:"-"`
}

// Header is one header name and value.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// RegoCompiler prepares a Rego policy's query once per config; New
// calls it for every policy with rego set. authz/rego provides one
// (rego.Compiler); it lives outside this package because OPA imports
// net/http.
type RegoCompiler func(policy string, r *configs.Rego, defaultTimeout time.Duration) (CustomProvider, error)

// HTTPProviderFactory builds a provider for a custom_providers entry.
// authz/extauthz provides one (extauthz.Factory).
type HTTPProviderFactory func(name string, h *configs.HTTPProvider) (CustomProvider, error)
