// Package egress is ztgate's outbound proxy. Workloads reach the outside
// world through it, and it decides by who is asking (client IP group or
// the SPIFFE ID of an mTLS client) and where they want to go (the TLS
// ClientHello's server name, the CONNECT host, the HTTP Host), without
// decrypting TLS.
//
// Three listener modes: HTTP CONNECT, transparent TLS (nftables REDIRECT,
// SO_ORIGINAL_DST) and plain HTTP forward proxying. Every connection
// goes through the same stages, in an order fixed in code:
//
//	source limits → request / ClientHello peek (egress/sni) → rules
//	(DENY → public resolver list → ALLOW) → resolve → SSRF guard on
//	every address (egress/ssrf) → dial the checked IP → splice
//
// and produces one decision record and one close record.
//
// egress owns the SNI allowlist, CONNECT, transparent mode and the SSRF
// guard. It does not know about HTTP routing, and it does not import
// dnsguard: it declares the two small interfaces it needs (Resolver,
// ResolvedChecker), which dnsguard's Server implements.
package egress
