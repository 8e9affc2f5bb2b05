// Package authz is ztgate's policy decision point: for the facts of one
// request (Attributes) it decides allow or deny, and why (Decision).
//
// It owns IP rules, Istio-style AuthorizationPolicy semantics (CUSTOM →
// DENY → ALLOW, AUDIT, dry-run), the decision record and its metrics.
// Rego (authz/rego) and external HTTP services (authz/extauthz) plug in
// through the CustomProvider interface declared here.
//
// It must not know how a request arrived: it never imports net/http and
// never sees an *http.Request (see deps_test.go), so the same Engine
// serves ingress, egress and `ztgate policy check`.
package authz
