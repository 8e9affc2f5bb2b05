package authz

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Decision log field names. They match docs/authz.md word for word.
const (
	LogMsgDecision = "authz decision"
	LogMsgOPA      = "opa decision"

	LogDecision         = "decision" // allow | deny
	LogAction           = "action"
	LogPolicy           = "policy"
	LogRule             = "rule"
	LogReason           = "reason"
	LogStatus           = "status"
	LogRequestID        = "request_id"
	LogListener         = "listener"
	LogRoute            = "route"
	LogSourceIP         = "source_ip"
	LogRemoteIP         = "remote_ip"
	LogPrincipal        = "principal"
	LogRequestPrincipal = "request_principal"
	LogMethod           = "method"
	LogHost             = "host"
	LogPath             = "path"
	LogSNI              = "sni"
	LogHeaders          = "headers"
	LogAudit            = "audit"
	LogDryRun           = "dry_run"

	// OPA's decision-log layout.
	LogDecisionID = "decision_id"
	LogOPAPath    = "path"
	LogOPAInput   = "input"
	LogOPAResult  = "result"
	LogOPAMetrics = "metrics"
	LogOPAError   = "error"
)

// Redacted replaces secret header values in decision records.
const Redacted = "[REDACTED]"

// secretHeaders are never logged in clear.
var secretHeaders = map[string]bool{
	"authorization": true, "proxy-authorization": true, "cookie": true, "set-cookie": true,
	"x-api-key": true, "x-auth-token": true, "x-csrf-token": true,
}

// IsSecretHeader reports whether a lower-case header name carries a
// credential that logs must not show.
func IsSecretHeader(name string) bool { return secretHeaders[name] }

// RedactHeaders returns a copy of h with secret values replaced.
func RedactHeaders(h map[string][]string) map[string][]string {
	out := make(map[string][]string, len(h))
	for k, v := range h {
		if secretHeaders[k] {
			out[k] = []string{Redacted}
			continue
		}
		out[k] = v
	}
	return out
}

type metrics struct {
	decisions *prometheus.CounterVec
	errors    *prometheus.CounterVec
}

type counterKey struct {
	policy  string
	action  Action
	verdict string
}

// counters resolves the decision counters of every policy once per
// Engine, so a decision does not hash label values.
func (e *Engine) buildCounters() {
	e.counters = map[counterKey]prometheus.Counter{}
	add := func(policy string, a Action, verdicts ...string) {
		for _, v := range verdicts {
			e.counters[counterKey{policy, a, v}] = e.m.decisions.WithLabelValues(label(policy), a.String(), v)
		}
	}
	add("", ActionNone, "allow")
	add("", ActionAllow, "deny")
	for _, p := range e.policies {
		add(p.name, p.action, "allow", "deny", "audit", "dry_run_deny")
	}
}

func (e *Engine) count(policy string, a Action, verdict string) {
	if c, ok := e.counters[counterKey{policy, a, verdict}]; ok {
		c.Inc()
		return
	}
	e.m.decisions.WithLabelValues(label(policy), a.String(), verdict).Inc()
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_authz_decisions_total",
			Help: "Authorization decisions by deciding policy (\"none\" if no policy decided), action and decision (allow, deny, audit, dry_run_deny).",
		}, []string{LogPolicy, LogAction, LogDecision}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_authz_provider_errors_total",
			Help: "CUSTOM provider (Rego or external) errors and timeouts, each of which denied, by policy and provider.",
		}, []string{LogPolicy, "provider"}),
	}
	if reg != nil {
		m.decisions = register(reg, m.decisions)
		m.errors = register(reg, m.errors)
	}
	return m
}

// register registers c, or returns the collector a previous Engine (an
// earlier reload) registered, so counters survive reloads.
func register(reg prometheus.Registerer, c *prometheus.CounterVec) *prometheus.CounterVec {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return old
			}
		}
	}
	return c
}

func label(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// record counts the decision and logs it: denies, AUDIT matches and
// dry-run results always, allows when decision_log.allowed is set (else
// at debug level).
func (e *Engine) record(a *Attributes, d *Decision) {
	e.count(d.Policy, d.Action, d.Verdict())
	for _, m := range d.Audit {
		e.count(m.Policy, ActionAudit, "audit")
	}
	if d.DryRun != nil && !d.DryRun.Allowed && d.Allowed {
		e.count(d.DryRun.Policy, d.DryRun.Action, "dry_run_deny")
	}
	level := slog.LevelInfo
	if d.Allowed && len(d.Audit) == 0 && d.DryRun == nil && !e.logAllow {
		level = slog.LevelDebug
	}
	ctx := context.Background()
	if !e.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String(LogDecision, d.Verdict()),
		slog.String(LogAction, d.Action.String()),
		slog.String(LogPolicy, d.Policy),
		slog.Int(LogRule, d.Rule),
		slog.String(LogReason, d.Reason),
		slog.Int(LogStatus, d.Status),
		slog.String(LogRequestID, a.RequestID),
		slog.String(LogListener, a.Listener),
		slog.String(LogRoute, a.Route),
		slog.String(LogSourceIP, addrString(a.SourceIP)),
		slog.String(LogRemoteIP, addrString(a.remote())),
		slog.String(LogPrincipal, a.Peer.Principal),
		slog.String(LogRequestPrincipal, a.RequestPrincipal),
		slog.String(LogMethod, a.Method),
		slog.String(LogHost, a.Host),
		slog.String(LogPath, a.Path),
		slog.String(LogSNI, a.SNI),
		slog.Any(LogHeaders, RedactHeaders(a.Headers)),
	}
	if len(d.Audit) > 0 {
		attrs = append(attrs, slog.Any(LogAudit, d.Audit))
	}
	if d.DryRun != nil {
		attrs = append(attrs, slog.Any(LogDryRun, d.DryRun))
	}
	e.log.LogAttrs(ctx, level, LogMsgDecision, attrs...)
}

func addrString(a interface {
	IsValid() bool
	String() string
}) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// lastOPA logs the Rego evaluations of one request in OPA's decision-log
// layout, one record each.
func (e *Engine) lastOPA(st *evalState, a *Attributes, d *Decision) {
	if st.n == 0 {
		return // no CUSTOM provider was asked
	}
	level := slog.LevelInfo
	if d.Allowed && !e.logAllow {
		level = slog.LevelDebug
	}
	ctx := context.Background()
	if !e.log.Enabled(ctx, level) {
		return
	}
	for _, r := range st.opa() {
		if r.DecisionID == "" {
			r.DecisionID = newDecisionID()
		}
		if r.Metrics == nil {
			r.Metrics = map[string]any{"timer_rego_query_eval_ns": r.EvalTime.Nanoseconds()}
		}
		attrs := []slog.Attr{
			slog.String(LogDecisionID, r.DecisionID),
			slog.String(LogOPAPath, r.Path),
			slog.Any(LogOPAResult, r.Result),
			slog.Any(LogOPAMetrics, r.Metrics),
			slog.String(LogRequestID, a.RequestID),
		}
		if e.logInput && r.Input != nil {
			attrs = append(attrs, slog.Any(LogOPAInput, r.Input))
		}
		if r.Error != "" {
			attrs = append(attrs, slog.String(LogOPAError, r.Error))
		}
		e.log.LogAttrs(ctx, level, LogMsgOPA, attrs...)
	}
}

// newDecisionID is a random (version 4) UUID, as OPA's decision ids.
func newDecisionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
