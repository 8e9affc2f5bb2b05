package jwt

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
)

// header is the part of a JOSE header the gateway reads before it verifies.
type header struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Typ  string          `json:"typ"`
	Crit json.RawMessage `json:"crit"`
}

// maxHeaderBytes bounds the decoded JOSE header: no real header is larger.
const maxHeaderBytes = 4096

// splitToken checks the compact JWS shape (three base64url segments, no
// padding) and returns the segments. It allocates nothing.
func splitToken(tok string) (h, p, s string, err error) {
	if tok == "" {
		return "", "", "", errors.New("empty token")
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", "", "", errors.New("not a compact JWS (character outside base64url)")
		}
	}
	h, rest, ok := strings.Cut(tok, ".")
	if !ok {
		return "", "", "", errors.New("not a compact JWS (expected 3 segments)")
	}
	p, s, ok = strings.Cut(rest, ".")
	if !ok || strings.Contains(s, ".") {
		return "", "", "", errors.New("not a compact JWS (expected 3 segments)")
	}
	if h == "" || p == "" {
		return "", "", "", errors.New("not a compact JWS (empty header or payload)")
	}
	return h, p, s, nil
}

// parseHeader decodes a JOSE header segment.
func parseHeader(seg string) (header, error) {
	var hd header
	if base64.RawURLEncoding.DecodedLen(len(seg)) > maxHeaderBytes {
		return hd, errors.New("header too large")
	}
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return hd, errors.New("header is not base64url")
	}
	if err := json.Unmarshal(raw, &hd); err != nil {
		return hd, errors.New("header is not a JSON object with string alg/kid")
	}
	if hd.Alg == "" {
		return hd, errors.New("header has no alg")
	}
	return hd, nil
}

// peekIssuer returns the unverified iss of a payload segment, used only
// to choose which provider verifies the token.
func peekIssuer(seg string) (string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return "", errors.New("payload is not base64url")
	}
	var c struct {
		Iss any `json:"iss"`
	}
	if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return "", errors.New("payload is not a JSON object")
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", errors.New("payload is not a JSON object")
	}
	s, _ := c.Iss.(string)
	return s, nil
}

func unescape(s string) (string, error) { return url.QueryUnescape(s) }
