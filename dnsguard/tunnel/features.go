package tunnel

import (
	"math"
	"math/bits"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// Feature is one per-query signal that can fire. Its String is the name
// used in alert records and in docs/dns.md.
type Feature uint16

// Per-query features and their weights (the default profile).
const (
	FeatNonLDH     Feature = 1 << iota // ≥2 bytes outside [A-Za-z0-9-_] in the subdomain: weight 4
	FeatLongName                       // subdomain ≥64 / ≥128 / ≥180 bytes: weight 1 / 2 / 3
	FeatLongLabel                      // a label ≥40 / ≥56 bytes: weight 1 / 2
	FeatEntropy                        // subdomain ≥16 bytes with Shannon entropy ≥3.5 / ≥4.0 bits per byte: weight 1 / 2
	FeatBase64                         // a ≥16-byte label mixing upper case, lower case and digits: weight 2
	FeatManyLabels                     // ≥6 subdomain labels of ≥20 bytes each on average: weight 1
	FeatQType                          // TXT, NULL, CNAME, MX, SRV, ANY, KEY or a PRIVATE type: weight 1 (NULL, KEY, PRIVATE: 2)
)

var featNames = []struct {
	f    Feature
	name string
}{
	{FeatNonLDH, "non_ldh"}, {FeatLongName, "long_name"}, {FeatLongLabel, "long_label"},
	{FeatEntropy, "entropy"}, {FeatBase64, "base64"}, {FeatManyLabels, "many_labels"}, {FeatQType, "qtype"},
}

// Names lists the features that are set, in a fixed order.
func (f Feature) Names() []string {
	out := make([]string, 0, bits.OnesCount16(uint16(f)))
	for _, n := range featNames {
		if f&n.f != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

func (f Feature) String() string { return strings.Join(f.Names(), ",") }

// Features are the per-query signals of one query name.
type Features struct {
	Name     string  // the name with escapes decoded, no trailing dot
	Domain   string  // the registered domain (public suffix + 1), lower case
	SubLen   int     // bytes of the subdomain part, dots included
	Labels   int     // labels in the subdomain part
	MaxLabel int     // longest label of the whole name
	NonLDH   int     // subdomain bytes outside [A-Za-z0-9-_]
	Entropy  float64 // Shannon entropy of the subdomain bytes, bits per byte (0 if <16 bytes)
	QType    uint16
	Score    int     // weighted sum of the fired features
	Fired    Feature // which features fired
}

// Sub returns the subdomain part of the name (what carries a tunnel's data).
func (f *Features) Sub() string {
	if f.SubLen <= 0 {
		return ""
	}
	return f.Name[:f.SubLen]
}

// Extract computes the features of a query name in DNS presentation format
// (as miekg/dns prints it: \DDD and \X escapes, optional trailing dot) and
// its query type. It never fails: malformed escapes are taken literally.
func Extract(name string, qtype uint16) Features {
	raw := decode(strings.TrimSuffix(name, "."))
	f := Features{Name: raw, QType: qtype}
	lower := asciiLower(raw)
	if reg, err := publicsuffix.EffectiveTLDPlusOne(lower); err == nil && len(reg) < len(lower) {
		f.Domain = reg
		f.SubLen = len(raw) - len(reg) - 1
	} else {
		f.Domain = lower
	}
	// Label lengths over the whole name (a tunnel may also use a long
	// registered label, but that costs it a registration per label).
	n := 0
	for i := 0; i <= len(raw); i++ {
		if i == len(raw) || raw[i] == '.' {
			f.MaxLabel = max(f.MaxLabel, n)
			n = 0
			continue
		}
		n++
	}
	sub := raw[:max(f.SubLen, 0)]
	var counts [256]uint8 // a name has at most 255 bytes
	b64 := false
	var up, lo, dg, ll int
	for i := 0; i <= len(sub); i++ {
		if i == len(sub) || sub[i] == '.' {
			if i > 0 || len(sub) > 0 {
				f.Labels++
			}
			if ll >= 16 && up >= 2 && lo >= 2 && dg >= 1 {
				b64 = true
			}
			up, lo, dg, ll = 0, 0, 0, 0
			continue
		}
		c := sub[i]
		if counts[c] < 255 { // names are at most 255 bytes; Extract also takes longer strings
			counts[c]++
		}
		ll++
		switch {
		case c >= 'a' && c <= 'z':
			lo++
		case c >= 'A' && c <= 'Z':
			up++
		case c >= '0' && c <= '9':
			dg++
		case c == '-' || c == '_':
		default:
			f.NonLDH++
		}
	}
	if len(sub) == 0 {
		f.Labels = 0
	}
	if len(sub) >= 16 {
		// H = log2(N) - (1/N) Σ c·log2(c), over the byte counts c of the
		// N non-dot bytes, with c·log2(c) from a table.
		total, sum := 0, 0.0
		for _, c := range counts {
			if c != 0 {
				total += int(c)
				sum += clog2c[c]
			}
		}
		if total > 0 {
			f.Entropy = max(0, math.Log2(float64(total))-sum/float64(total)) // rounding can dip below 0
		}
	}
	f.score(b64)
	return f
}

func (f *Features) score(b64 bool) {
	add := func(ft Feature, w int) {
		f.Fired |= ft
		f.Score += w
	}
	if f.NonLDH >= 1 {
		add(FeatNonLDH, 4)
	}
	switch {
	case f.SubLen >= 180:
		add(FeatLongName, 3)
	case f.SubLen >= 128:
		add(FeatLongName, 2)
	case f.SubLen >= 64:
		add(FeatLongName, 1)
	}
	switch {
	case f.MaxLabel >= 56 && f.SubLen > 0:
		add(FeatLongLabel, 2)
	case f.MaxLabel >= 40 && f.SubLen > 0:
		add(FeatLongLabel, 1)
	}
	switch {
	case f.Entropy >= 4.0:
		add(FeatEntropy, 2)
	case f.Entropy >= 3.5:
		add(FeatEntropy, 1)
	}
	if b64 {
		add(FeatBase64, 2)
	}
	if f.Labels >= 6 && f.SubLen >= 20*f.Labels {
		add(FeatManyLabels, 1)
	}
	switch {
	case f.QType == 10 || f.QType == 25 || f.QType >= 65280 && f.QType <= 65534:
		add(FeatQType, 2)
	case f.QType == 16 || f.QType == 5 || f.QType == 15 || f.QType == 33 || f.QType == 255:
		add(FeatQType, 1)
	}
}

// decode turns presentation escapes into raw bytes. An escaped dot
// becomes 0x7f so label boundaries stay where the wire format has them.
func decode(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b = append(b, c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			v := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')
			if v <= 255 {
				if v == '.' {
					v = 0x7f
				}
				b = append(b, byte(v))
				i += 3
				continue
			}
		}
		i++
		if s[i] == '.' {
			b = append(b, 0x7f)
		} else {
			b = append(b, s[i])
		}
	}
	return string(b)
}

// clog2c[c] is c·log2(c) for the byte counts of a name (at most 255).
var clog2c = func() (t [256]float64) {
	for c := 2; c < len(t); c++ {
		t[c] = float64(c) * math.Log2(float64(c))
	}
	return t
}()

// asciiLower lower-cases A-Z only, byte for byte, so the result has the
// same length as s even when s is not valid UTF-8 (strings.ToLower would
// replace such bytes with U+FFFD).
func asciiLower(s string) string {
	i := 0
	for i < len(s) && !(s[i] >= 'A' && s[i] <= 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if b[i] >= 'A' && b[i] <= 'Z' {
			b[i] += 'a' - 'A'
		}
	}
	return string(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
