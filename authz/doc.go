// Package authz is ztgate's policy decision point: for the facts of one
// request (Attributes) it decides allow or deny, and why (Decision).
//
// It owns IP rules, Istio-style AuthorizationPolicy semantics (CUSTOM →
// DENY → ALLOW, AUDIT, dry-run), the decision record and its metrics.
// Rego (authz/rego) and external HTTP services (authz/extauthz) plug in
// through the CustomProvider interface declared here.
//
// It must not know how a request arrived: it never imports net/http and
// never sees an *http.Request (TestNoNetHTTP), so the same Engine
// serves ingress, egress and `ztgate policy check`.
//
// Wiring, on every load and reload:
//
//	if err := istio.MergeAuthn(cfg); err != nil { ... } // policies_dir RequestAuthentication → authn.jwt; before authn compiles
//	eng, err := authz.New(cfg, authz.Deps{
//		Logger:  logger.With("component", "authz"),
//		Metrics: registry,          // the same Registerer every reload
//		Rego:    rego.Compiler,     // authz/rego
//		HTTP:    extauthz.Factory,  // authz/extauthz
//	})
//	// publish eng in an atomic.Pointer; after the swap and drain: old.Close()
//
// Per request: eng.Decide(ctx, attrs) → Decision (Allowed, Status,
// UpstreamHeaders, ResponseHeaders, Body/DenyBody).
package authz
