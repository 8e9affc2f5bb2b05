package tunnel

import (
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/ztgate/ztgate/configs"
	"github.com/ztgate/ztgate/dnsguard/internal/lru"
)

// Mode says what a verdict does.
type Mode int

// Modes; String matches the config spelling of dns.tunneling.mode.
const (
	ModeBlock Mode = iota
	ModeReport
	ModeOff
)

func (m Mode) String() string {
	switch m {
	case ModeBlock:
		return configs.TunnelBlock
	case ModeReport:
		return configs.TunnelReport
	default:
		return configs.TunnelOff
	}
}

// DefaultExempt are the zones never scored: DNSBL/DNSWL and reputation
// services whose queries carry hashes and reversed addresses by design,
// and the reverse-mapping trees. Operators add more with tunneling.exempt.
var DefaultExempt = []string{
	// DNS block and allow lists
	"spamhaus.org", "spamhaus.net", "spamcop.net", "barracudacentral.org", "sorbs.net", "uceprotect.net",
	"surbl.org", "uribl.com", "dnswl.org", "abuseat.org", "mailspike.net", "abusix.zone", "abusix.net",
	"spameatingmonkey.net", "psbl.org", "senderscore.com", "s5h.net", "junkemailfilter.com", "nordspam.com",
	"manitu.net", "rbl.jp", "dnsbl.info", "interserver.net", "blocklist.de", "0spam.org", "gbudb.net",
	"httpbl.org", "projecthoneypot.org", "invaluement.com", "zeustracker.abuse.ch", "abuse.ch",
	// reputation and antivirus cloud lookups
	"cymru.com", "avqs.mcafee.com", "avts.mcafee.com", "gti.mcafee.com", "sophosxl.net", "senderbase.org",
	"e5.sk", "trendmicro.com", "webroot.com", "brightcloud.com", "esetsoftware.com", "eset.com",
	// reverse trees
	"in-addr.arpa", "ip6.arpa", "e164.arpa",
}

// Profile is the compiled detector configuration. It is immutable.
type Profile struct {
	Mode               Mode
	QueryScore         int
	InstantScore       int
	SuspiciousQueries  int
	SuspiciousBytes    int
	DistinctSubdomains int
	NameBytes          int
	Window             time.Duration
	Quarantine         time.Duration
	refuse             [][2]uint16
	exempt             map[string]struct{}
}

// NewProfile compiles the tunneling section (already defaulted and
// validated by configs).
func NewProfile(c configs.DNSTunneling) (*Profile, error) {
	p := &Profile{
		QueryScore: c.QueryScore, InstantScore: c.InstantScore,
		SuspiciousQueries: c.SuspiciousQueries, SuspiciousBytes: c.SuspiciousBytes,
		DistinctSubdomains: c.DistinctSubdomains, NameBytes: c.NameBytes,
		Window: c.Window, Quarantine: c.Quarantine, exempt: map[string]struct{}{},
	}
	switch c.Mode {
	case configs.TunnelBlock, "":
		p.Mode = ModeBlock
	case configs.TunnelReport:
		p.Mode = ModeReport
	case configs.TunnelOff:
		p.Mode = ModeOff
	default:
		return nil, fmt.Errorf("tunneling.mode %q is not valid (use block, report or off)", c.Mode)
	}
	if p.Window <= 0 || p.Quarantine <= 0 || p.QueryScore < 1 || p.InstantScore < 1 {
		return nil, fmt.Errorf("tunneling: window, quarantine and scores must be positive")
	}
	for _, t := range c.RefuseTypes {
		lo, hi, ok := configs.DNSRefuseType(t)
		if !ok {
			return nil, fmt.Errorf("tunneling.refuse_types: %q is not a query type", t)
		}
		if lo != 0 {
			p.refuse = append(p.refuse, [2]uint16{lo, hi})
		}
	}
	if !c.NoDefaultExempt {
		for _, z := range DefaultExempt {
			p.exempt[z] = struct{}{}
		}
	}
	for _, z := range c.Exempt {
		p.exempt[strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(z, "*."), "."))] = struct{}{}
	}
	return p, nil
}

// Refused reports whether qtype is on the refuse list for this name.
// RFC 8145 trust-anchor signals (_ta-xxxx, qtype NULL) are let through:
// validating resolvers send them.
func (p *Profile) Refused(name string, qtype uint16) bool {
	for _, r := range p.refuse {
		if qtype >= r[0] && qtype <= r[1] {
			if qtype == 10 && strings.HasPrefix(strings.ToLower(name), "_ta-") {
				return false
			}
			return true
		}
	}
	return false
}

// Exempt reports whether name (lower case, no trailing dot) is in or
// below an exempt zone.
func (p *Profile) Exempt(name string) bool {
	if len(p.exempt) == 0 {
		return false
	}
	for {
		if _, ok := p.exempt[name]; ok {
			return true
		}
		i := strings.IndexByte(name, '.')
		if i < 0 {
			return false
		}
		name = name[i+1:]
	}
}

// Alert is the record emitted once when a (client, domain) pair is judged
// a tunnel.
type Alert struct {
	Time       time.Time  `json:"time"`
	Client     netip.Addr `json:"client"`
	Domain     string     `json:"domain"`
	Mode       string     `json:"mode"`
	Score      int        `json:"score"`      // the highest query score seen in the window
	Features   []string   `json:"features"`   // per-query features that fired in the window
	Rules      []string   `json:"rules"`      // which pair rules judged it: instant, suspicious, volume, nxdomain, answers
	Queries    int        `json:"queries"`    // queries in the window
	Suspicious int        `json:"suspicious"` // suspicious queries in the window
	NameBytes  int        `json:"name_bytes"` // subdomain bytes carried in names in the window
	Distinct   int        `json:"distinct"`   // estimated distinct subdomains in the window
	Quarantine string     `json:"quarantine"` // how long the pair is blocked
	LastQuery  string     `json:"last_query"` // the query that tipped it (truncated to 100 bytes)
}

// Verdict is the detector's answer for one query.
type Verdict struct {
	Block       bool   // the query must not be forwarded
	Quarantined bool   // the pair was already judged (Block in block mode)
	WouldBlock  bool   // report mode: what block mode would do
	Alert       *Alert // set on the query that tipped the pair
}

const bitmapWords = 4 // 256-bit linear counter per window bucket

type window struct {
	queries, susp, suspBytes, nameBytes, nx, answers, answerBytes int32
	seen                                                          [bitmapWords]uint64
}

type pair struct {
	start    int64 // current bucket start, unix ns
	cur, prv window
	maxScore int
	fired    Feature
}

type key struct {
	client netip.Addr
	domain string
}

type shard struct {
	mu    sync.Mutex
	pairs *lru.LRU[key, *pair]
	bytes int64
}

const numShards = 32

// PairBytes is the accounted size of one tracked pair, excluding its
// domain string.
const PairBytes = 256

// Tracker keeps per-(client, registered domain) behaviour over a sliding
// window, in LRU tables with a hard cap, and the quarantine list.
type Tracker struct {
	seed   maphash.Seed
	shards [numShards]shard
	qmu    sync.Mutex
	quar   *lru.LRU[key, int64] // until, unix ns
}

// NewTracker returns a tracker holding at most maxPairs pairs and
// maxPairs/4 (at least 1024) quarantined pairs.
func NewTracker(maxPairs int) *Tracker {
	t := &Tracker{seed: maphash.MakeSeed()}
	per := max(maxPairs/numShards, 1)
	for i := range t.shards {
		s := &t.shards[i]
		s.pairs = lru.New[key, *pair](per)
		s.pairs.OnEvict = func(k key, _ *pair) { s.bytes -= int64(PairBytes + len(k.domain)) }
	}
	t.quar = lru.New[key, int64](max(maxPairs/4, 1024))
	return t
}

// SetCap changes the pair cap (on reload).
func (t *Tracker) SetCap(maxPairs int) {
	per := max(maxPairs/numShards, 1)
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.pairs.SetCap(per)
		s.mu.Unlock()
	}
	t.qmu.Lock()
	t.quar.SetCap(max(maxPairs/4, 1024))
	t.qmu.Unlock()
}

// Size reports the tracked pairs, quarantined pairs and accounted bytes.
func (t *Tracker) Size() (pairs, quarantined int, bytes int64) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		pairs += s.pairs.Len()
		bytes += s.bytes
		s.mu.Unlock()
	}
	t.qmu.Lock()
	quarantined = t.quar.Len()
	t.qmu.Unlock()
	bytes += int64(quarantined) * 96
	return
}

func (t *Tracker) shard(k key) *shard {
	var h maphash.Hash
	h.SetSeed(t.seed)
	b := k.client.As16()
	h.Write(b[:])
	h.WriteString(k.domain)
	return &t.shards[h.Sum64()%numShards]
}

// Quarantined reports whether the pair is in quarantine at now.
func (t *Tracker) Quarantined(now time.Time, client netip.Addr, domain string) bool {
	k := key{client, domain}
	t.qmu.Lock()
	defer t.qmu.Unlock()
	until, ok := t.quar.Peek(k)
	if !ok {
		return false
	}
	if now.UnixNano() >= until {
		t.quar.Remove(k)
		return false
	}
	return true
}

// Release lifts a quarantine early (admin action, tests).
func (t *Tracker) Release(client netip.Addr, domain string) {
	t.qmu.Lock()
	t.quar.Remove(key{client, domain})
	t.qmu.Unlock()
}

func (p *pair) roll(now int64, win int64) {
	switch d := now - p.start; {
	case d < win:
		return
	case d < 2*win:
		p.prv = p.cur
		p.start += win
	default:
		p.prv = window{}
		p.start = now
	}
	p.cur = window{}
}

// weighted returns cur + prv scaled by the part of prv still inside the window.
func (p *pair) weighted(now, win int64, cur, prv int32) int {
	frac := 1 - float64(now-p.start)/float64(win)
	if frac < 0 {
		frac = 0
	}
	return int(cur) + int(float64(prv)*frac)
}

func (p *pair) distinct() int {
	zeros := 0
	for i := 0; i < bitmapWords; i++ {
		zeros += 64 - bits.OnesCount64(p.cur.seen[i]|p.prv.seen[i])
	}
	m := float64(bitmapWords * 64)
	if zeros == 0 {
		return int(m * math.Log(m)) // saturated
	}
	return int(math.Round(-m * math.Log(float64(zeros)/m)))
}

// Observe records one query of client with features f under profile p and
// returns the verdict. Exempt names and ModeOff are the caller's to skip.
func (t *Tracker) Observe(now time.Time, p *Profile, client netip.Addr, f *Features) Verdict {
	k := key{client, f.Domain}
	if t.Quarantined(now, client, f.Domain) {
		return Verdict{Block: p.Mode == ModeBlock, Quarantined: true, WouldBlock: true}
	}
	ns, win := now.UnixNano(), int64(p.Window)
	s := t.shard(k)
	s.mu.Lock()
	pr, ok := s.pairs.Get(k)
	if !ok {
		k.domain = strings.Clone(k.domain)
		pr = &pair{start: ns}
		s.pairs.Put(k, pr)
		s.bytes += int64(PairBytes + len(k.domain))
	}
	pr.roll(ns, win)
	w := &pr.cur
	w.queries++
	// Volume and suspicion count only subdomains new to the window: a
	// tunnel must send fresh names (or the cache would answer), while a
	// legitimate client repeating one odd-looking name adds nothing.
	fresh := true
	if f.SubLen > 0 {
		h := maphash.String(t.seed, f.Sub())
		bit := h % (bitmapWords * 64)
		mask := uint64(1) << (bit % 64)
		fresh = (w.seen[bit/64]|pr.prv.seen[bit/64])&mask == 0
		w.seen[bit/64] |= mask
	}
	if fresh {
		w.nameBytes += int32(f.SubLen)
		if f.Score >= p.QueryScore {
			w.susp++
			w.suspBytes += int32(f.SubLen)
			pr.fired |= f.Fired
		}
	}
	pr.maxScore = max(pr.maxScore, f.Score)
	var rules []string
	if f.Score >= p.InstantScore {
		rules = append(rules, "instant")
	}
	if pr.weighted(ns, win, w.susp, pr.prv.susp) >= p.SuspiciousQueries ||
		pr.weighted(ns, win, w.suspBytes, pr.prv.suspBytes) >= p.SuspiciousBytes {
		rules = append(rules, "suspicious")
	}
	// Volume: only worth the distinct estimate when names carry bytes.
	nameBytes := pr.weighted(ns, win, w.nameBytes, pr.prv.nameBytes)
	distinct := 0
	if w.queries&7 == 0 || nameBytes >= p.NameBytes || len(rules) > 0 {
		distinct = pr.distinct()
		if distinct >= p.DistinctSubdomains || nameBytes >= p.NameBytes {
			rules = append(rules, "volume")
		}
		answers := pr.weighted(ns, win, w.answers, pr.prv.answers)
		nx := pr.weighted(ns, win, w.nx, pr.prv.nx)
		if answers >= 40 && 2*nx >= answers && distinct >= p.DistinctSubdomains/4 {
			rules = append(rules, "nxdomain")
		}
		if pr.weighted(ns, win, w.answerBytes, pr.prv.answerBytes) >= p.NameBytes && distinct >= 20 {
			rules = append(rules, "answers")
		}
	}
	if len(rules) == 0 {
		s.mu.Unlock()
		return Verdict{}
	}
	if distinct == 0 {
		distinct = pr.distinct()
	}
	fired := pr.fired | f.Fired
	a := &Alert{
		Time: now, Client: client, Domain: k.domain, Mode: p.Mode.String(), Score: pr.maxScore,
		Features: fired.Names(), Rules: rules,
		Queries:    pr.weighted(ns, win, w.queries, pr.prv.queries),
		Suspicious: pr.weighted(ns, win, w.susp, pr.prv.susp),
		NameBytes:  nameBytes, Distinct: distinct, Quarantine: p.Quarantine.String(),
		LastQuery: truncate(Escape(f.Name), 100),
	}
	// The pair's counters restart: after the quarantine it is judged afresh.
	s.pairs.Remove(k)
	s.bytes -= int64(PairBytes + len(k.domain))
	s.mu.Unlock()
	t.qmu.Lock()
	t.quar.Put(key{client, strings.Clone(f.Domain)}, ns+int64(p.Quarantine))
	t.qmu.Unlock()
	return Verdict{Block: p.Mode == ModeBlock, WouldBlock: true, Alert: a}
}

// ObserveAnswer adds an upstream answer's rcode and its TXT/NULL/other
// record bytes to the pair, if it is tracked.
func (t *Tracker) ObserveAnswer(now time.Time, p *Profile, client netip.Addr, domain string, nxdomain bool, bigBytes int) {
	k := key{client, domain}
	s := t.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	pr, ok := s.pairs.Peek(k)
	if !ok {
		return
	}
	pr.roll(now.UnixNano(), int64(p.Window))
	pr.cur.answers++
	if nxdomain {
		pr.cur.nx++
	}
	pr.cur.answerBytes += int32(min(bigBytes, 1<<16))
}

// Escape writes a decoded name back in presentation form: bytes outside
// printable ASCII (and the escaped-dot marker 0x7f) as \DDD, so alert
// records stay valid UTF-8 and show exactly what was sent.
func Escape(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e || s[i] == '\\' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 0x7f:
			b.WriteString("\\.")
		case c < 0x21 || c > 0x7e || c == '\\':
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
