package authz

import (
	"net/netip"
	"strings"
	"sync"
)

// Attributes are the facts of one request, gathered once by the gateway
// (or by `ztgate policy check`) and read by every policy. Authz never
// writes them. Unset fields are zero values: an absent principal is "".
type Attributes struct {
	// RequestID identifies the request in logs and deny bodies.
	RequestID string

	// SourceIP is the direct peer's address (Istio source.ip, ipBlocks).
	SourceIP   netip.Addr
	SourcePort uint16
	// RemoteIP is the client address from X-Forwarded-For as believed
	// through the listener's trusted proxies (Istio remote.ip,
	// remoteIpBlocks). Invalid means "same as SourceIP".
	RemoteIP netip.Addr

	// Peer is the verified client certificate identity (mTLS).
	Peer Peer

	// RequestPrincipal is the verified JWT's iss + "/" + sub ("" without
	// a valid token).
	RequestPrincipal string
	// Claims are the verified JWT's claims, as decoded from JSON:
	// string, float64, bool, nil, []any, map[string]any.
	Claims map[string]any
	// Audiences are the token's aud values.
	Audiences []string
	// Presenter is the token's azp claim.
	Presenter string
	// ClaimsMemo, when set, caches values derived from Claims for as long
	// as the verified token is cached (authn.Identity.Memo): a policy
	// engine converts the claims once per token, not once per request.
	// Nil: derive per request. Keys are private types of the packages
	// that store them; values must be immutable.
	ClaimsMemo *sync.Map

	// Host is the request's authority (may include a port).
	Host string
	// Method is the HTTP method, upper case.
	Method string
	// Path is the normalized request path, without the query.
	Path string
	// RawQuery is the query string, without "?".
	RawQuery string
	// Protocol is e.g. "HTTP/1.1", "HTTP/2.0", "HTTP/3.0".
	Protocol string
	// Headers are the request headers, names lower-case.
	Headers map[string][]string

	// DestinationPort is the port the request arrived on.
	DestinationPort int
	// SNI is the TLS server name the client sent.
	SNI string

	// Listener and Route are the names of the listener and route that
	// matched; RouteLabels are the route's labels (for selectors).
	Listener    string
	Route       string
	RouteLabels map[string]string

	// Body is an optional small prefix of the request body, for Rego's
	// input.parsed_body; BodyTruncated says it is not the whole body.
	Body          []byte
	BodyTruncated bool
}

// Peer is a SPIFFE workload identity from the client certificate.
type Peer struct {
	// Principal is the SPIFFE ID without "spiffe://", as Istio's
	// source.principal: "example.org/ns/default/sa/web".
	Principal      string
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// PeerFromSPIFFEID splits "spiffe://td/ns/NS/sa/SA" (or without the
// scheme) into a Peer. Namespace and ServiceAccount stay empty for IDs
// not in that mesh form.
func PeerFromSPIFFEID(id string) Peer {
	p := strings.TrimPrefix(id, "spiffe://")
	if p == "" {
		return Peer{}
	}
	out := Peer{Principal: p}
	td, rest, _ := strings.Cut(p, "/")
	out.TrustDomain = td
	parts := strings.Split(rest, "/")
	if len(parts) == 4 && parts[0] == "ns" && parts[2] == "sa" {
		out.Namespace, out.ServiceAccount = parts[1], parts[3]
	}
	return out
}

// Header returns the first value of the lower-case header name.
func (a *Attributes) Header(name string) string {
	if v := a.Headers[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// remote is RemoteIP, or SourceIP when no trusted proxy supplied one.
func (a *Attributes) remote() netip.Addr {
	if a.RemoteIP.IsValid() {
		return a.RemoteIP
	}
	return a.SourceIP
}
