package authn

import (
	"errors"
	"strings"
)

// XFCC renders the peer as one element of Envoy's X-Forwarded-Client-Cert
// header: By (the gateway's own SPIFFE ID, omitted when empty), Hash (the
// leaf certificate's SHA-256), Subject (always quoted, as Envoy does) and
// URI (the peer's SPIFFE ID), e.g.
//
//	By=spiffe://example.org/ns/gw/sa/ztgate;Hash=8e0c…;Subject="CN=sleep";URI=spiffe://example.org/ns/default/sa/sleep
func (p *Peer) XFCC(by string) string {
	var b strings.Builder
	if by != "" {
		b.WriteString("By=")
		b.WriteString(xfccValue(by, false))
		b.WriteByte(';')
	}
	b.WriteString("Hash=")
	b.WriteString(p.CertSHA256)
	b.WriteString(";Subject=")
	b.WriteString(xfccValue(p.Subject, true))
	if p.SPIFFEID != "" {
		b.WriteString(";URI=")
		b.WriteString(xfccValue(p.SPIFFEID, false))
	}
	return b.String()
}

// xfccValue quotes a value that contains , ; = or " (or always), and
// escapes " and \ inside quotes.
func xfccValue(v string, always bool) string {
	if !always && !strings.ContainsAny(v, ",;=\"\\\x7f") && !hasControl(v) {
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < ' ' || c == 0x7f {
			c = '?' // never let a certificate field break the header
		}
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

// XFCCElement is one certificate's key/value pairs in an XFCC header.
// Keys keep their case (By, Hash, Cert, Chain, Subject, URI, DNS); a key
// may repeat (URI, DNS).
type XFCCElement [][2]string

// Get returns the first value of key (case-insensitive).
func (e XFCCElement) Get(key string) string {
	for _, kv := range e {
		if strings.EqualFold(kv[0], key) {
			return kv[1]
		}
	}
	return ""
}

// MaxXFCCBytes bounds the header ParseXFCC accepts.
const MaxXFCCBytes = 64 << 10

// ParseXFCC parses an X-Forwarded-Client-Cert header in Envoy's format:
// elements separated by ",", pairs by ";", key=value, values optionally
// double-quoted with backslash escapes.
func ParseXFCC(s string) ([]XFCCElement, error) {
	if len(s) > MaxXFCCBytes {
		return nil, errors.New("xfcc: header too large")
	}
	var (
		out  []XFCCElement
		cur  XFCCElement
		i    int
		errf = func(msg string) ([]XFCCElement, error) { return nil, errors.New("xfcc: " + msg) }
	)
	for {
		// key
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ';' && s[i] != ',' && s[i] != '"' {
			i++
		}
		key := strings.TrimSpace(s[start:i])
		if i >= len(s) || s[i] != '=' || key == "" {
			return errf("expected key=value")
		}
		i++ // '='
		var val strings.Builder
		if i < len(s) && s[i] == '"' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					val.WriteByte(s[i+1])
					i += 2
					continue
				}
				if c == '"' {
					closed = true
					i++
					break
				}
				val.WriteByte(c)
				i++
			}
			if !closed {
				return errf("unterminated quoted value")
			}
		} else {
			start := i
			for i < len(s) && s[i] != ';' && s[i] != ',' {
				if s[i] == '"' || s[i] == '=' {
					return errf("unquoted value contains \" or =")
				}
				i++
			}
			val.WriteString(strings.TrimSpace(s[start:i]))
		}
		cur = append(cur, [2]string{key, val.String()})
		if i >= len(s) {
			out = append(out, cur)
			return out, nil
		}
		switch s[i] {
		case ';':
		case ',':
			out = append(out, cur)
			cur = nil
		default:
			return errf("expected ; or , after a value")
		}
		i++
		for i < len(s) && s[i] == ' ' {
			i++
		}
	}
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' {
			return true
		}
	}
	return false
}
