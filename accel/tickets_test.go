package accel

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
)

// resumes dials addr with the client's session cache and reports whether
// the handshake resumed a session.
func resumes(t *testing.T, c *http.Client, addr string) bool {
	t.Helper()
	resp, err := c.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.TLS.DidResume
}

func ticketClient(t *testing.T, caFile string, version uint16) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true, // every request is a new handshake
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost",
			MinVersion: version, MaxVersion: version, ClientSessionCache: tls.NewLRUClientSessionCache(8)},
	}}
}

func newTickets(t *testing.T, cfg configs.AccelSessions, reg prometheus.Registerer) *Tickets {
	t.Helper()
	if cfg.Rotation == 0 {
		cfg.Rotation = time.Hour // rotation is driven by the test through Rotate
	}
	tk, err := NewTickets(cfg, Deps{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tk.Close() })
	return tk
}

func TestTicketResumptionAndRotation(t *testing.T) {
	e := newEngine(t, configs.Accel{}, prometheus.NewRegistry())
	cert := selfSigned(t, testKeys()["ecdsa_p256"])
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			tk := newTickets(t, configs.AccelSessions{}, reg)
			addr, ca := serveTLS(t, e, cert, tk)
			c := ticketClient(t, ca, v)
			// (serveTLS registers its config twice; the counts below
			// would double if Register chained its counter again.)
			signs := e.m.ops.WithLabelValues("go", "ecdsa_p256", ResultOK)
			before := value(signs)
			if resumes(t, c, addr) {
				t.Fatal("first handshake resumed")
			}
			if !resumes(t, c, addr) {
				t.Fatal("second handshake did not resume")
			}
			if got := value(signs) - before; got != 1 {
				t.Fatalf("%v signatures for one full and one resumed handshake, want 1", got)
			}
			// Tickets survive two rotations ...
			tk.Rotate()
			tk.Rotate()
			if !resumes(t, c, addr) {
				t.Fatal("ticket from two rotations ago was refused")
			}
			// ... and the client now holds a ticket under the newest
			// key; three more rotations retire that key.
			for range randomKeysKept {
				tk.Rotate()
			}
			if resumes(t, c, addr) {
				t.Fatal("ticket resumed after its key was rotated out")
			}
			if got := value(tk.hs.WithLabelValues("true")); got != 2 {
				t.Errorf("resumed handshakes = %v, want 2", got)
			}
			if got := value(tk.hs.WithLabelValues("false")); got != 2 {
				t.Errorf("full handshakes = %v, want 2", got)
			}
		})
	}
}

// TestSharedTicketKeyFile: two gateways reading one key file resume each
// other's sessions; with local random keys they do not.
func TestSharedTicketKeyFile(t *testing.T) {
	e := newEngine(t, configs.Accel{}, prometheus.NewRegistry())
	cert := selfSigned(t, testKeys()["ecdsa_p256"])
	file := filepath.Join(t.TempDir(), "tickets.key")
	k1, k2 := make([]byte, 32), make([]byte, 48)
	rand.Read(k1)
	rand.Read(k2)
	os.WriteFile(file, []byte(fmt.Sprintf("# current first\n%s\n\n%s\n", base64.StdEncoding.EncodeToString(k1), base64.StdEncoding.EncodeToString(k2))), 0o600)
	for _, tc := range []struct {
		name string
		cfg  configs.AccelSessions
		want bool
	}{
		{"shared file", configs.AccelSessions{KeyFile: file}, true},
		{"random keys", configs.AccelSessions{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addrA, ca := serveTLS(t, e, cert, newTickets(t, tc.cfg, nil))
			addrB, _ := serveTLS(t, e, cert, newTickets(t, tc.cfg, nil))
			c := ticketClient(t, ca, tls.VersionTLS13)
			resumes(t, c, addrA)
			if got := resumes(t, c, addrB); got != tc.want {
				t.Fatalf("gateway B resumed A's session: %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTicketsDisabled(t *testing.T) {
	e := newEngine(t, configs.Accel{}, prometheus.NewRegistry())
	tk := newTickets(t, configs.AccelSessions{Disabled: true}, nil)
	addr, ca := serveTLS(t, e, selfSigned(t, testKeys()["ecdsa_p256"]), tk)
	c := ticketClient(t, ca, tls.VersionTLS13)
	resumes(t, c, addr)
	if resumes(t, c, addr) {
		t.Fatal("resumed with tickets disabled")
	}
}

func TestParseTicketKeys(t *testing.T) {
	b32 := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, tc := range []struct {
		name, in, err string
		n             int
	}{
		{"one", b32 + "\n", "", 1},
		{"comments and blanks", "# x\n\n" + b32 + "\n  " + b32 + "  \n", "", 2},
		{"haproxy 80 bytes", base64.StdEncoding.EncodeToString(make([]byte, 80)), "", 1},
		{"empty", "\n# nothing\n", "no keys", 0},
		{"short", base64.StdEncoding.EncodeToString(make([]byte, 16)), "16-byte key", 0},
		{"not base64", "!!!\n", "line 1 is not base64", 0},
		{"too many", strings.Repeat(b32+"\n", maxFileKeys+1), "more than 16 keys", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := ParseTicketKeys([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want error containing %q", err, tc.err)
				}
				return
			}
			if err != nil || len(keys) != tc.n {
				t.Fatalf("got %d keys, %v; want %d", len(keys), err, tc.n)
			}
		})
	}
}

func TestMissingTicketKeyFile(t *testing.T) {
	_, err := NewTickets(configs.AccelSessions{KeyFile: "/nonexistent/tickets.key"}, Deps{})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/tickets.key") {
		t.Fatalf("got %v", err)
	}
}

func FuzzParseTicketKeys(f *testing.F) {
	f.Add([]byte(base64.StdEncoding.EncodeToString(make([]byte, 32))))
	f.Add([]byte("# c\n\n!!\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParseTicketKeys(data)
		if err == nil && (len(keys) == 0 || len(keys) > maxFileKeys) {
			t.Fatalf("%d keys without error", len(keys))
		}
	})
}

func TestTicketsCloseStopsRotation(t *testing.T) {
	before := runtime.NumGoroutine()
	tk, err := NewTickets(configs.AccelSessions{Rotation: time.Minute}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	tk.Close()
	tk.Close() // idempotent
	waitGoroutines(t, before)
}
