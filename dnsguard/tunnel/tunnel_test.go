package tunnel

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/configs"
)

func defaultTunneling() configs.DNSTunneling {
	return configs.DNSTunneling{Mode: "block", QueryScore: 4, InstantScore: 8, SuspiciousQueries: 6, SuspiciousBytes: 768,
		DistinctSubdomains: 400, NameBytes: 16384, Window: time.Minute, Quarantine: 15 * time.Minute,
		RefuseTypes: []string{"NULL", "KEY", "PRIVATE"}, MaxTracked: 1000}
}

func TestExtract(t *testing.T) {
	cases := []struct {
		name      string
		qtype     uint16
		domain    string
		sub       string
		wantFired Feature
		minScore  int
		maxScore  int
	}{
		{"www.example.com.", 1, "example.com", "www", 0, 0, 0},
		{"example.co.uk", 1, "example.co.uk", "", 0, 0, 0},
		{"a.b.example.co.uk", 16, "example.co.uk", "a.b", FeatQType, 1, 1},
		{"com.", 1, "com", "", 0, 0, 0},
		{"_ta-4f66", 10, "_ta-4f66", "", FeatQType, 2, 2},
		{"/QEAAAABBA.t2.test", 16, "t2.test", "/QEAAAABBA", FeatNonLDH | FeatQType, 5, 5},
		{"zbguaA-Aaahhh-Drink-mal-ein-J\\228germeister-.t.test", 10, "t.test", "zbguaA-Aaahhh-Drink-mal-ein-J\xe4germeister-", FeatNonLDH, 8, 20},
		{"WwW.ExAmPlE.CoM", 1, "example.com", "WwW", 0, 0, 0},
		// dnscat2-shaped: hex labels packed into a long name.
		{strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef012345678.", 3) + "c2.example.", 5, "c2.example", "", FeatLongName | FeatLongLabel, 5, 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := Extract(c.name, c.qtype)
			if f.Domain != c.domain {
				t.Errorf("domain %q, want %q", f.Domain, c.domain)
			}
			if c.sub != "" && f.Sub() != c.sub {
				t.Errorf("sub %q, want %q", f.Sub(), c.sub)
			}
			if f.Fired&c.wantFired != c.wantFired {
				t.Errorf("fired %s, want at least %s", f.Fired, c.wantFired)
			}
			if f.Score < c.minScore || f.Score > c.maxScore {
				t.Errorf("score %d, want %d..%d (%s)", f.Score, c.minScore, c.maxScore, f.Fired)
			}
		})
	}
}

func TestProfileRefusedAndExempt(t *testing.T) {
	tc := defaultTunneling()
	tc.Exempt = []string{"*.corp.example"}
	p, err := NewProfile(tc)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		qtype uint16
		want  bool
	}{{"x.t.test", 10, true}, {"x.t.test", 25, true}, {"x.t.test", 65399, true}, {"x.t.test", 16, false}, {"_ta-4f66", 10, false}} {
		if got := p.Refused(c.name, c.qtype); got != c.want {
			t.Errorf("Refused(%s, %d) = %v", c.name, c.qtype, got)
		}
	}
	for _, c := range []struct {
		name string
		want bool
	}{{"2.0.0.127.zen.spamhaus.org", true}, {"spamhaus.org", true}, {"a.b.corp.example", true}, {"notspamhaus.org", false}, {"example.com", false}} {
		if got := p.Exempt(c.name); got != c.want {
			t.Errorf("Exempt(%s) = %v", c.name, got)
		}
	}
}

// TestSyntheticTunnels: shapes of tunnels not in the captured corpora
// (dnscat2 hex, dnstt base32, a slow low-entropy exfiltration) are judged
// within the leak budget.
func TestSyntheticTunnels(t *testing.T) {
	p, _ := NewProfile(defaultTunneling())
	hexChunk := "4a6f686e20446f6520313233204d61696e205374726565742c20416e79746f"
	b32Chunk := "mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpjqwe3dfmzwxiylsgayt"
	cases := []struct {
		name  string
		qtype uint16
		gen   func(i int) string
	}{
		{"dnscat2-hex-txt", 16, func(i int) string {
			return hexChunk + ".a" + hexChunk[i%10:] + ".c2.example"
		}},
		{"dnstt-base32-txt", 16, func(i int) string {
			return b32Chunk[i%7:] + "." + b32Chunk + "." + b32Chunk[:40] + ".t.example"
		}},
		{"slow-exfil-a", 1, func(i int) string { // 30-byte base32 chunks with a sequence number, qtype A
			return fmt.Sprintf("%s%04x", b32Chunk[i%20:i%20+26], i) + ".x.example"
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := NewTracker(100)
			now := time.Unix(1000, 0)
			client := netip.MustParseAddr("10.0.0.1")
			sent := 0
			for i := 0; i < 2000; i++ {
				f := Extract(c.gen(i), c.qtype)
				v := tr.Observe(now, p, client, &f)
				if v.Block {
					t.Logf("%s blocked after %d queries, %d subdomain bytes", c.name, i, sent)
					return
				}
				sent += f.SubLen
				now = now.Add(100 * time.Millisecond)
			}
			t.Fatalf("%s never blocked (%d bytes sent)", c.name, sent)
		})
	}
}

func TestQuarantineExpiresAndReportMode(t *testing.T) {
	tc := defaultTunneling()
	tc.Mode = "report"
	p, _ := NewProfile(tc)
	tr := NewTracker(100)
	now := time.Unix(1000, 0)
	client := netip.MustParseAddr("10.0.0.1")
	f := Extract("zbguaA-Aaahhh-Drink-mal-ein-J\\228germeister-\\200\\201.t.test", 16)
	v := tr.Observe(now, p, client, &f)
	if v.Block || !v.WouldBlock || v.Alert == nil || v.Alert.Mode != "report" {
		t.Fatalf("report mode verdict = %+v", v)
	}
	if !tr.Quarantined(now.Add(14*time.Minute), client, "t.test") {
		t.Errorf("pair left quarantine early")
	}
	if tr.Quarantined(now.Add(16*time.Minute), client, "t.test") {
		t.Errorf("pair still quarantined after 15m")
	}
	if tr.Quarantined(now, netip.MustParseAddr("10.0.0.2"), "t.test") {
		t.Errorf("quarantine leaked to another client")
	}
}
