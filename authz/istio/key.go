package istio

import (
	"fmt"
	"strings"
)

// KeyKind is the attribute a "when" condition reads.
type KeyKind uint8

// The supported condition keys. Istio ignores a key it does not know;
// ztgate refuses it.
const (
	KeyClaim            KeyKind = iota + 1 // request.auth.claims[a][b]
	KeyHeader                              // request.headers[name]
	KeyRequestPrincipal                    // request.auth.principal
	KeyAudiences                           // request.auth.audiences
	KeyPresenter                           // request.auth.presenter
	KeySourceIP                            // source.ip
	KeyRemoteIP                            // remote.ip
	KeySourcePrincipal                     // source.principal
	KeySourceNamespace                     // source.namespace
	KeyDestinationPort                     // destination.port
	KeySNI                                 // connection.sni
)

var plainKeys = map[string]KeyKind{
	"request.auth.principal": KeyRequestPrincipal,
	"request.auth.audiences": KeyAudiences,
	"request.auth.presenter": KeyPresenter,
	"source.ip":              KeySourceIP,
	"remote.ip":              KeyRemoteIP,
	"source.principal":       KeySourcePrincipal,
	"source.namespace":       KeySourceNamespace,
	"destination.port":       KeyDestinationPort,
	"connection.sni":         KeySNI,
}

// KnownKeys lists the accepted keys, for error messages.
const KnownKeys = "request.auth.claims[NAME][...], request.headers[NAME], request.auth.principal, request.auth.audiences, request.auth.presenter, source.ip, remote.ip, source.principal, source.namespace, destination.port, connection.sni"

// Key is a parsed condition key.
type Key struct {
	Kind KeyKind
	// Header is the lower-cased header name (KeyHeader).
	Header string
	// Claim is the claim path (KeyClaim): request.auth.claims[a][b] is
	// ["a", "b"].
	Claim []string
}

// ParseKey parses a "when" key.
func ParseKey(s string) (Key, error) {
	if k, ok := plainKeys[s]; ok {
		return Key{Kind: k}, nil
	}
	switch {
	case strings.HasPrefix(s, "request.auth.claims["):
		parts, err := brackets(s[len("request.auth.claims"):])
		if err != nil {
			return Key{}, fmt.Errorf("%q: %v (e.g. request.auth.claims[groups] or request.auth.claims[realm_access][roles])", s, err)
		}
		return Key{Kind: KeyClaim, Claim: parts}, nil
	case strings.HasPrefix(s, "request.headers["):
		parts, err := brackets(s[len("request.headers"):])
		if err == nil && len(parts) != 1 {
			err = fmt.Errorf("takes one header name")
		}
		if err != nil {
			return Key{}, fmt.Errorf("%q: %v (e.g. request.headers[x-token])", s, err)
		}
		return Key{Kind: KeyHeader, Header: strings.ToLower(parts[0])}, nil
	}
	return Key{}, fmt.Errorf("%q is not a supported key (use one of: %s)", s, KnownKeys)
}

// brackets splits "[a][b]" into ["a", "b"].
func brackets(s string) ([]string, error) {
	var out []string
	for s != "" {
		if s[0] != '[' {
			return nil, fmt.Errorf("expected [ at %q", s)
		}
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return nil, fmt.Errorf("missing ]")
		}
		name := s[1:end]
		if name == "" || strings.ContainsAny(name, "[") {
			return nil, fmt.Errorf("empty or malformed name in brackets")
		}
		out = append(out, name)
		s = s[end+1:]
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("missing [name]")
	}
	return out, nil
}
