// Package pkcs11 finds private keys inside a PKCS#11 token (an HSM,
// SoftHSM2) by RFC 7512 "pkcs11:" URI and signs with them through
// github.com/ThalesGroup/crypto11. The keys never leave the token.
package pkcs11

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// URI is the part of an RFC 7512 PKCS#11 URI that selects a key.
type URI struct {
	Token  string // token= (the token label)
	Serial string // serial=
	SlotID *int   // slot-id=
	Object string // object= (the key's CKA_LABEL)
	ID     []byte // id= (the key's CKA_ID, percent-encoded bytes)
	Type   string // type=, if given must be "private"

	Module    string // module-path= (query)
	PinValue  string // pin-value= (query)
	PinSource string // pin-source= (query): a file holding the PIN
}

// maxURI bounds what ParseURI reads; real URIs are a few hundred bytes.
const maxURI = 4096

// ParseURI parses "pkcs11:token=ztgate;object=web?pin-source=/run/pin".
// Unknown path attributes are refused (RFC 7512 lets a consumer ignore
// them, but a typo would otherwise pick a different key); unknown query
// attributes are ignored as the RFC says.
func ParseURI(s string) (*URI, error) {
	if len(s) > maxURI {
		return nil, fmt.Errorf("pkcs11 URI is longer than %d bytes", maxURI)
	}
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return nil, errors.New(`pkcs11 URI must start with "pkcs11:"`)
	}
	path, query, _ := strings.Cut(rest, "?")
	u := &URI{}
	seen := map[string]bool{}
	if path != "" {
		for _, attr := range strings.Split(path, ";") {
			name, raw, ok := strings.Cut(attr, "=")
			if !ok || name == "" {
				return nil, fmt.Errorf("pkcs11 URI attribute %q is not name=value", attr)
			}
			if seen[name] {
				return nil, fmt.Errorf("pkcs11 URI attribute %q is given twice", name)
			}
			seen[name] = true
			val, err := unescape(raw)
			if err != nil {
				return nil, fmt.Errorf("pkcs11 URI attribute %s: %w", name, err)
			}
			switch name {
			case "token":
				u.Token = val
			case "serial":
				u.Serial = val
			case "slot-id":
				n, err := strconv.Atoi(val)
				if err != nil || n < 0 {
					return nil, fmt.Errorf("pkcs11 URI slot-id %q is not a number", val)
				}
				u.SlotID = &n
			case "object":
				u.Object = val
			case "id":
				u.ID = []byte(val)
			case "type":
				if val != "private" {
					return nil, fmt.Errorf("pkcs11 URI type=%q: a TLS key must be type=private", val)
				}
				u.Type = val
			case "manufacturer", "model", "library-manufacturer", "library-description", "library-version", "slot-description", "slot-manufacturer":
				// Accepted and not used to select: the token is chosen
				// by token, serial or slot-id.
			default:
				return nil, fmt.Errorf("pkcs11 URI attribute %q is not supported (use token, serial, slot-id, object, id, type)", name)
			}
		}
	}
	if query != "" {
		for _, attr := range strings.Split(query, "&") {
			name, raw, ok := strings.Cut(attr, "=")
			if !ok {
				return nil, fmt.Errorf("pkcs11 URI query attribute %q is not name=value", attr)
			}
			val, err := unescape(raw)
			if err != nil {
				return nil, fmt.Errorf("pkcs11 URI query attribute %s: %w", name, err)
			}
			switch name {
			case "module-path":
				u.Module = val
			case "pin-value":
				u.PinValue = val
			case "pin-source":
				u.PinSource = strings.TrimPrefix(val, "file:")
			}
		}
	}
	if u.Object == "" && len(u.ID) == 0 {
		return nil, errors.New("pkcs11 URI names no key (add object=<label> or id=<%xx bytes>)")
	}
	return u, nil
}

func unescape(s string) (string, error) {
	v, err := url.PathUnescape(s)
	if err != nil {
		return "", fmt.Errorf("%q has a bad percent-escape", s)
	}
	return v, nil
}

// String returns the URI without its PIN, for logs.
func (u *URI) String() string {
	var parts []string
	if u.Token != "" {
		parts = append(parts, "token="+url.PathEscape(u.Token))
	}
	if u.Serial != "" {
		parts = append(parts, "serial="+url.PathEscape(u.Serial))
	}
	if u.SlotID != nil {
		parts = append(parts, "slot-id="+strconv.Itoa(*u.SlotID))
	}
	if u.Object != "" {
		parts = append(parts, "object="+url.PathEscape(u.Object))
	}
	if len(u.ID) > 0 {
		var b strings.Builder
		for _, c := range u.ID {
			fmt.Fprintf(&b, "%%%02x", c)
		}
		parts = append(parts, "id="+b.String())
	}
	s := "pkcs11:" + strings.Join(parts, ";")
	if u.Module != "" {
		s += "?module-path=" + url.PathEscape(u.Module)
	}
	return s
}
