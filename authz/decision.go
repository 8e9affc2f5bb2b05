package authz

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Decision is the outcome of one request: allowed or not, the policy and
// rule that decided, and a short reason a human can read. It is a value;
// the gateway maps it to a response (Status, DenyBody) and headers.
type Decision struct {
	Allowed bool
	// Action is the action of the deciding policy (ActionNone when no
	// policy applied, or every applicable one allowed implicitly).
	Action Action
	// Policy is the deciding policy's name ("" if none).
	Policy string
	// Rule is the index of the matching rule in Policy, or -1.
	Rule int
	// Reason says why, e.g. `DENY policy "block-admin" rule 0 matched`.
	Reason string
	// Status is the client status: 200 when allowed, else 403 unless a
	// CUSTOM provider chose another.
	Status int
	// UpstreamHeaders are added to the upstream request (CUSTOM allow).
	UpstreamHeaders []Header
	// ResponseHeaders are added to the response to the client.
	ResponseHeaders []Header
	// Body is a CUSTOM provider's deny body; empty means the gateway's
	// standard JSON body (DenyBody).
	Body string
	// RequestID is copied from the attributes.
	RequestID string
	// Audit lists the AUDIT policies that matched.
	Audit []Match
	// DryRun is the result the request would have had with the dry-run
	// policies enforced (nil when none apply).
	DryRun *Shadow
	// Trace is the step-by-step evaluation (DecideExplain only).
	Trace []string
}

// Match names a policy and rule that matched.
type Match struct {
	Policy string `json:"policy"`
	Action Action `json:"action"`
	Rule   int    `json:"rule"`
}

// Shadow is the would-be result with dry-run policies enforced.
type Shadow struct {
	Allowed bool    `json:"allowed"`
	Action  Action  `json:"action"`
	Policy  string  `json:"policy,omitempty"`
	Rule    int     `json:"rule"`
	Reason  string  `json:"reason"`
	Matched []Match `json:"matched,omitempty"`
}

// Verdict is "allow" or "deny", the decision log's decision field.
func (d Decision) Verdict() string {
	if d.Allowed {
		return "allow"
	}
	return "deny"
}

// DenyBody is the body of a deny response: the provider's own body if a
// CUSTOM provider gave one, else a short JSON object with the request id
// and never internal details.
func (d Decision) DenyBody() (body []byte, contentType string) {
	if d.Body != "" {
		return []byte(d.Body), "text/plain; charset=utf-8"
	}
	b, _ := json.Marshal(struct {
		Error     string `json:"error"`
		RequestID string `json:"request_id,omitempty"`
	}{"access denied", d.RequestID})
	return append(b, '\n'), "application/json"
}

// Explain is a human-readable account of the decision, for `ztgate
// policy check` and debugging.
func (d Decision) Explain() string {
	var b strings.Builder
	fmt.Fprintf(&b, "decision: %s (status %d)\n", strings.ToUpper(d.Verdict()), d.Status)
	if d.Policy != "" {
		fmt.Fprintf(&b, "policy:   %s (%s)", d.Policy, d.Action)
		if d.Rule >= 0 {
			fmt.Fprintf(&b, ", rule %d", d.Rule)
		}
		b.WriteString("\n")
	} else {
		b.WriteString("policy:   none decided\n")
	}
	fmt.Fprintf(&b, "reason:   %s\n", d.Reason)
	for _, h := range d.UpstreamHeaders {
		fmt.Fprintf(&b, "upstream header: %s: %s\n", h.Name, h.Value)
	}
	for _, m := range d.Audit {
		fmt.Fprintf(&b, "audit:    %s rule %d matched\n", m.Policy, m.Rule)
	}
	if s := d.DryRun; s != nil {
		verdict := "ALLOW"
		if !s.Allowed {
			verdict = "DENY"
		}
		fmt.Fprintf(&b, "dry-run:  would %s (%s)\n", verdict, s.Reason)
	}
	if len(d.Trace) > 0 {
		b.WriteString("evaluation:\n")
		for _, t := range d.Trace {
			fmt.Fprintf(&b, "  %s\n", t)
		}
	}
	return b.String()
}
