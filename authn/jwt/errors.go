package jwt

import (
	"errors"
	"fmt"
)

// Reason says why a presented token was refused. Its String() is the
// value of the reason log field and metric label (docs/authn.md).
type Reason int

// Reasons, one per check.
const (
	ReasonMalformed      Reason = iota + 1 // not three base64url JSON segments
	ReasonTooLarge                         // longer than max_token_bytes
	ReasonMultiple                         // more than one token in the request
	ReasonAlgNotAllowed                    // alg none, HMAC or not in the provider's list
	ReasonUnknownIssuer                    // iss matches no provider for the route
	ReasonUnknownKey                       // no key with that kid (after a refetch)
	ReasonNoKeys                           // the provider's JWKS is not loaded
	ReasonBadSignature                     // signature does not verify
	ReasonBadIssuer                        // iss is not the provider's issuer
	ReasonBadAudience                      // aud contains none of the audiences
	ReasonExpired                          // exp is past (beyond clock_skew)
	ReasonNotYetValid                      // nbf is in the future (beyond clock_skew)
	ReasonIssuedInFuture                   // iat is in the future (beyond clock_skew)
	ReasonBadClaims                        // a registered claim has the wrong type
)

var reasonNames = map[Reason]string{
	ReasonMalformed:      "malformed",
	ReasonTooLarge:       "too_large",
	ReasonMultiple:       "multiple_tokens",
	ReasonAlgNotAllowed:  "alg_not_allowed",
	ReasonUnknownIssuer:  "unknown_issuer",
	ReasonUnknownKey:     "unknown_kid",
	ReasonNoKeys:         "jwks_unavailable",
	ReasonBadSignature:   "bad_signature",
	ReasonBadIssuer:      "bad_issuer",
	ReasonBadAudience:    "bad_audience",
	ReasonExpired:        "expired",
	ReasonNotYetValid:    "not_yet_valid",
	ReasonIssuedInFuture: "iat_in_future",
	ReasonBadClaims:      "bad_claims",
}

func (r Reason) String() string {
	if s, ok := reasonNames[r]; ok {
		return s
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// Error is a present but invalid token. The gateway answers 401 with
// WWW-Authenticate: Bearer error="invalid_token" and logs Reason and
// Detail. It never contains the token.
type Error struct {
	Reason   Reason
	Provider string // empty when no provider was chosen yet
	Detail   string // a short, token-free explanation for the log
}

func (e *Error) Error() string {
	s := "jwt: " + e.Reason.String()
	if e.Provider != "" {
		s += " (provider " + e.Provider + ")"
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is makes errors.Is(err, &Error{Reason: r}) match on the reason.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == e.Reason
}

// WWWAuthenticate is the response header value for a refused token (RFC 6750).
const WWWAuthenticate = `Bearer error="invalid_token"`

// ReasonOf returns the reason of an authn error, or 0.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return 0
}

func fail(r Reason, provider, format string, args ...any) *Error {
	return &Error{Reason: r, Provider: provider, Detail: fmt.Sprintf(format, args...)}
}
