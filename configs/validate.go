package configs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Error is one problem in a config file: where it is and what to fix.
type Error struct {
	File string // the config file, as the operator named it
	Key  string // the key path, e.g. routes[2].upstream
	Msg  string // the bad value and what would be accepted
}

func (e *Error) Error() string {
	switch {
	case e.Key == "":
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	default:
		return fmt.Sprintf("%s: %s: %s", e.File, e.Key, e.Msg)
	}
}

// validator collects problems under a key path prefix. Every section's
// validate method receives one scoped to its own key.
type validator struct {
	src  string // the config file
	path string // the key path prefix
	errs *[]error
}

func newValidator(file string) *validator {
	if file == "" {
		file = "<config>"
	}
	return &validator{src: file, errs: new([]error)}
}

// at returns a validator for a sub-key: v.at("routes[2]").at("upstream").
func (v *validator) at(key string) *validator {
	return &validator{src: v.src, path: v.join(key), errs: v.errs}
}

// index returns a validator for element i of a list key.
func (v *validator) index(key string, i int) *validator {
	return v.at(fmt.Sprintf("%s[%d]", key, i))
}

func (v *validator) join(key string) string {
	switch {
	case v.path == "":
		return key
	case key == "":
		return v.path
	case strings.HasPrefix(key, "["):
		return v.path + key
	default:
		return v.path + "." + key
	}
}

// addf records a problem at key (relative to the validator's prefix).
func (v *validator) addf(key, format string, args ...any) {
	*v.errs = append(*v.errs, &Error{File: v.src, Key: v.join(key), Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) err() error {
	if len(*v.errs) == 0 {
		return nil
	}
	return errors.Join(*v.errs...)
}

// ok reports whether nothing has been recorded so far.
func (v *validator) ok() bool { return len(*v.errs) == 0 }

func (v *validator) oneOf(key, val string, allowed ...string) bool {
	for _, a := range allowed {
		if val == a {
			return true
		}
	}
	v.addf(key, "%q is not valid (use one of: %s)", val, strings.Join(allowed, ", "))
	return false
}

// hostPort checks a listen or dial address of the form host:port.
func (v *validator) hostPort(key, addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.addf(key, "%q is not an address (use host:port, e.g. \"127.0.0.1:8443\" or \":8443\")", addr)
		return false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.addf(key, "%q has an invalid port %q (use 0-65535)", addr, port)
		return false
	}
	if strings.ContainsAny(host, " /") {
		v.addf(key, "%q has an invalid host %q", addr, host)
		return false
	}
	return true
}

// prefix parses a CIDR, or a bare IP as a /32 or /128.
func (v *validator) prefix(key, s string) (netip.Prefix, bool) {
	p, err := ParsePrefix(s)
	if err != nil {
		v.addf(key, "%q is not a CIDR or IP address (e.g. \"10.0.0.0/8\", \"192.0.2.1\", \"2001:db8::/32\")", s)
		return netip.Prefix{}, false
	}
	return p, true
}

// regex checks that s compiles as a Go (RE2) regular expression.
func (v *validator) regex(key, s string) bool {
	if _, err := regexp.Compile(s); err != nil {
		v.addf(key, "%q is not a valid regular expression: %v", s, err)
		return false
	}
	return true
}

// file checks that path names a readable regular file.
func (v *validator) file(key, path string) bool {
	if path == "" {
		v.addf(key, "must name a file")
		return false
	}
	st, err := os.Stat(path)
	switch {
	case err != nil:
		v.addf(key, "%q cannot be read: %v", path, unwrapPathError(err))
		return false
	case st.IsDir():
		v.addf(key, "%q is a directory, not a file", path)
		return false
	}
	return true
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// reference checks that name is one of known, suggesting the closest.
func (v *validator) reference(key, what, name string, known []string) bool {
	for _, k := range known {
		if k == name {
			return true
		}
	}
	v.addf(key, "%s", notDefined(what, name, known))
	return false
}

func notDefined(what, name string, known []string) string {
	if s := suggest(name, known); s != "" {
		return fmt.Sprintf("%s %q is not defined (did you mean %q?)", what, name, s)
	}
	if len(known) == 0 {
		return fmt.Sprintf("%s %q is not defined (none are defined)", what, name)
	}
	sorted := append([]string(nil), known...)
	sort.Strings(sorted)
	return fmt.Sprintf("%s %q is not defined (known: %s)", what, name, strings.Join(sorted, ", "))
}

// unique records duplicate names in a list.
func (v *validator) unique(listKey, what string, names []string) {
	seen := map[string]int{}
	for i, n := range names {
		if n == "" {
			continue
		}
		if j, dup := seen[n]; dup {
			v.addf(fmt.Sprintf("%s[%d].name", listKey, i), "%s %q is already defined at %s[%d]", what, n, listKey, j)
			continue
		}
		seen[n] = i
	}
}

// suggest returns the known word closest to s if it is close enough to be
// a likely typo, else "".
func suggest(s string, known []string) string {
	best, bestD := "", 1<<30
	for _, k := range known {
		d := levenshtein(strings.ToLower(s), strings.ToLower(k))
		if d < bestD {
			best, bestD = k, d
		}
	}
	limit := 2
	if len(s) > 8 {
		limit = 3
	}
	if bestD <= limit && bestD < len(s) {
		return best
	}
	return ""
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// ParsePrefix parses "10.0.0.0/8", "2001:db8::/32" or a bare address
// ("192.0.2.1" → 192.0.2.1/32). The result is masked.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
