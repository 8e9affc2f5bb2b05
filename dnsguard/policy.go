package dnsguard

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/ztgate/ztgate/configs"
)

// group is one compiled client group.
type group struct {
	name          string
	clients       []netip.Prefix // empty: everyone
	exactAllow    map[string]struct{}
	exactDeny     map[string]struct{}
	wildAllow     map[string]struct{} // "example.com" for "*.example.com"
	wildDeny      map[string]struct{}
	allowlistOnly bool
}

// policy is the ordered list of groups.
type policy struct {
	groups []*group
}

// Verdict reasons for policy decisions; they appear in logs as "reason".
const (
	reasonDenyList   = "deny_list"
	reasonNotAllowed = "not_on_allowlist"
)

func compilePolicy(gs []configs.DNSGroup) (*policy, error) {
	p := &policy{}
	for i, gc := range gs {
		g := &group{
			name: gc.Name, allowlistOnly: gc.AllowlistOnly,
			exactAllow: map[string]struct{}{}, exactDeny: map[string]struct{}{},
			wildAllow: map[string]struct{}{}, wildDeny: map[string]struct{}{},
		}
		for _, c := range gc.Clients {
			pfx, err := configs.ParsePrefix(c)
			if err != nil {
				return nil, fmt.Errorf("dns.groups[%d].clients: %q: %w", i, c, err)
			}
			g.clients = append(g.clients, pfx)
		}
		add := func(exact, wild map[string]struct{}, pat string) error {
			pat = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(pat), "."))
			if err := configs.CheckDNSPattern(pat); err != nil {
				return err
			}
			if rest, ok := strings.CutPrefix(pat, "*."); ok {
				wild[rest] = struct{}{}
			} else {
				exact[pat] = struct{}{}
			}
			return nil
		}
		for j, a := range gc.Allow {
			if err := add(g.exactAllow, g.wildAllow, a); err != nil {
				return nil, fmt.Errorf("dns.groups[%d].allow[%d]: %q: %w", i, j, a, err)
			}
		}
		for j, d := range gc.Deny {
			if err := add(g.exactDeny, g.wildDeny, d); err != nil {
				return nil, fmt.Errorf("dns.groups[%d].deny[%d]: %q: %w", i, j, d, err)
			}
		}
		for j, f := range gc.AllowFiles {
			if err := readList(f, func(p string) error { return add(g.exactAllow, g.wildAllow, p) }); err != nil {
				return nil, fmt.Errorf("dns.groups[%d].allow_files[%d]: %w", i, j, err)
			}
		}
		for j, f := range gc.DenyFiles {
			if err := readList(f, func(p string) error { return add(g.exactDeny, g.wildDeny, p) }); err != nil {
				return nil, fmt.Errorf("dns.groups[%d].deny_files[%d]: %w", i, j, err)
			}
		}
		p.groups = append(p.groups, g)
	}
	return p, nil
}

// maxListLine bounds one list-file line; longer lines are an error.
const maxListLine = 4096

// readList reads a list file: one name per line, '#' comments, and
// hosts-file lines ("0.0.0.0 name") whose last field is the name.
func readList(path string, add func(string) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1024), maxListLine)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		name := fields[len(fields)-1]
		if len(fields) >= 2 {
			if _, err := netip.ParseAddr(fields[0]); err != nil {
				return fmt.Errorf("%s:%d: %q is neither a name nor a hosts-file line", path, n, line)
			}
		}
		if err := add(name); err != nil {
			return fmt.Errorf("%s:%d: %q: %w", path, n, name, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// groupFor returns the first group whose clients contain addr, or nil.
func (p *policy) groupFor(addr netip.Addr) *group {
	for _, g := range p.groups {
		if len(g.clients) == 0 {
			return g
		}
		for _, pfx := range g.clients {
			if pfx.Contains(addr) {
				return g
			}
		}
	}
	return nil
}

// decide returns "" when name (lower case, no trailing dot) may resolve,
// else the reason it is blocked. The most specific entry wins; on a tie
// (the same name on both lists) deny wins.
func (g *group) decide(name string) string {
	if _, ok := g.exactDeny[name]; ok {
		return reasonDenyList
	}
	if _, ok := g.exactAllow[name]; ok {
		return ""
	}
	for parent := name; ; {
		i := strings.IndexByte(parent, '.')
		if i < 0 {
			break
		}
		parent = parent[i+1:]
		if _, ok := g.wildDeny[parent]; ok {
			return reasonDenyList
		}
		if _, ok := g.wildAllow[parent]; ok {
			return ""
		}
	}
	if g.allowlistOnly {
		return reasonNotAllowed
	}
	return ""
}
