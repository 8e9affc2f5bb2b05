// Package authn answers "who is calling?" for an ingress request: the
// verified JWT (request principal, as Istio's RequestAuthentication) in
// authn/jwt, and the client certificate's SPIFFE identity (peer principal,
// as Istio's PeerAuthentication) in authn/peer.
//
// The results are plain values that the gateway copies into the request
// attributes handed to authz; authn does not import authz.
package authn

import "sync"

// Identity is a verified JWT.
type Identity struct {
	// RequestPrincipal is iss + "/" + sub, as Istio's request.auth.principal.
	RequestPrincipal string
	Issuer           string
	Subject          string
	// Audiences is the aud claim (a single string becomes one element).
	Audiences []string
	// Presenter is the azp claim.
	Presenter string
	// Claims are all claims of the token as decoded JSON (nested objects
	// and lists kept; numbers are float64). Read only: it is shared by
	// every request that presents the same token.
	Claims map[string]any
	// Provider is the name of the provider that verified the token.
	Provider string
	// Memo caches values that consumers derive from Claims (for example
	// the claims converted for a Rego policy), so they are computed once
	// per verified token rather than once per request. It is set when
	// the identity is kept in the verified-token cache, nil otherwise.
	// Keys are private types of the packages that store them; values
	// must be immutable. Its size is bounded by the number of distinct
	// keys those packages use.
	Memo *sync.Map
}

// Peer is the verified identity of a client certificate.
type Peer struct {
	// Principal is the SPIFFE ID without "spiffe://", as Istio's
	// source.principal: example.org/ns/default/sa/web.
	Principal string
	// SPIFFEID is the full ID: spiffe://example.org/ns/default/sa/web.
	SPIFFEID    string
	TrustDomain string
	// Namespace and ServiceAccount are set for IDs of the mesh form
	// /ns/<namespace>/sa/<service-account>.
	Namespace      string
	ServiceAccount string
	// CertSHA256 is the lowercase hex SHA-256 of the leaf certificate (DER).
	CertSHA256 string
	// Subject is the leaf certificate's subject DN (for XFCC).
	Subject string
}

// Log field names used by authn, as in docs/authn.md.
const (
	LogFieldProvider  = "provider"
	LogFieldReason    = "reason"
	LogFieldPrincipal = "principal"
	LogFieldJWKS      = "jwks"
	LogFieldError     = "error"
)
