package accel

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
	"weak"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/configs"
)

// Tickets owns the TLS session-ticket keys of the process. Keys are
// random and rotate every cfg.Rotation (a ticket stays valid for two
// more rotations), or come from a key file shared by several gateways
// behind one load balancer, re-read every rotation. Resumed handshakes
// need no private-key operation.
type Tickets struct {
	log      *slog.Logger
	disabled bool
	rotation time.Duration
	file     string

	rotations *prometheus.CounterVec
	hs        *prometheus.CounterVec

	mu      sync.Mutex
	keys    [][32]byte // first encrypts; all decrypt
	configs []weak.Pointer[tls.Config]

	quit chan struct{}
	done chan struct{}
	once sync.Once
}

// Ticket key limits.
const (
	randomKeysKept  = 3  // current + two previous rotations
	maxFileKeys     = 16 // lines read from a key file
	maxKeyFileBytes = 64 << 10
	maxRegistered   = 4096
)

// NewTickets makes the first keys (or reads the key file) and starts
// rotating. A key file that cannot be read is an error here; later, a
// bad re-read keeps the previous keys and is logged and counted.
func NewTickets(cfg configs.AccelSessions, deps Deps) (*Tickets, error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Tickets{
		log:      deps.Logger.With("component", "accel"),
		disabled: cfg.Disabled,
		rotation: cfg.Rotation,
		file:     cfg.KeyFile,
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_tls_ticket_key_rotations_total",
			Help: "Session-ticket key rotations (or key-file reloads) by result.",
		}, []string{LabelResult}),
		hs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ztgate_tls_session_resumption_total",
			Help: "TLS handshakes on registered listeners, by whether a session ticket resumed them.",
		}, []string{"resumed"}),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	if deps.Metrics != nil {
		t.rotations = register(deps.Metrics, t.rotations)
		t.hs = register(deps.Metrics, t.hs)
	}
	if t.rotation <= 0 {
		t.rotation = time.Hour
	}
	if t.disabled {
		close(t.done)
		return t, nil
	}
	if err := t.Rotate(); err != nil {
		return nil, err
	}
	go t.loop()
	return t, nil
}

func (t *Tickets) loop() {
	defer close(t.done)
	tick := time.NewTicker(t.rotation)
	defer tick.Stop()
	for {
		select {
		case <-t.quit:
			return
		case <-tick.C:
			if err := t.Rotate(); err != nil {
				t.log.Warn("session ticket keys kept", LogReason, err.Error())
			}
		}
	}
}

// Rotate makes a new random key (keeping the previous two), or re-reads
// the key file, and installs the keys on every registered config.
func (t *Tickets) Rotate() error {
	if t.disabled {
		return nil
	}
	var keys [][32]byte
	if t.file != "" {
		var err error
		if keys, err = ReadTicketKeys(t.file); err != nil {
			t.rotations.WithLabelValues(ResultError).Inc()
			return err
		}
	} else {
		var k [32]byte
		rand.Read(k[:])
		t.mu.Lock()
		keys = append([][32]byte{k}, t.keys...)
		t.mu.Unlock()
		if len(keys) > randomKeysKept {
			keys = keys[:randomKeysKept]
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.keys = keys
	live := t.configs[:0]
	for _, w := range t.configs {
		if c := w.Value(); c != nil {
			c.SetSessionTicketKeys(keys)
			live = append(live, w)
		}
	}
	clear(t.configs[len(live):])
	t.configs = live
	t.rotations.WithLabelValues(ResultOK).Inc()
	return nil
}

// Register installs the current keys on c and keeps them current as they
// rotate (c is held weakly: a config dropped by a reload is forgotten).
// It also counts c's handshakes as resumed or full, by chaining
// c.VerifyConnection. With session tickets disabled it turns them off on
// c. Register long-lived configs, not one per handshake.
func (t *Tickets) Register(c *tls.Config) {
	t.mu.Lock()
	defer t.mu.Unlock()
	live := t.configs[:0]
	for _, w := range t.configs {
		switch w.Value() {
		case c:
			return // already registered: do not chain the counter twice
		case nil: // collected: forget it
		default:
			live = append(live, w)
		}
	}
	clear(t.configs[len(live):])
	t.configs = live
	if len(t.configs) >= maxRegistered {
		t.log.Warn("too many tls configs registered for session tickets; this one keeps Go's own ticket keys")
		return
	}
	t.configs = append(t.configs, weak.Make(c))

	prev := c.VerifyConnection
	full, resumed := t.hs.WithLabelValues("false"), t.hs.WithLabelValues("true")
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.DidResume {
			resumed.Inc()
		} else {
			full.Inc()
		}
		if prev != nil {
			return prev(cs)
		}
		return nil
	}
	if t.disabled {
		c.SessionTicketsDisabled = true
		return
	}
	c.SetSessionTicketKeys(t.keys)
}

// Close stops rotation. Registered configs keep their last keys.
func (t *Tickets) Close() error {
	t.once.Do(func() { close(t.quit) })
	<-t.done
	return nil
}

// ReadTicketKeys reads a ticket-key file: one base64 key per line (blank
// lines and # comments ignored), the first encrypting new tickets. A key
// of exactly 32 bytes is used as is; longer ones (e.g. haproxy's 48- or
// 80-byte keys) are hashed with SHA-256 to 32 bytes.
func ReadTicketKeys(file string) ([][32]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("accel: ticket key file: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(ioLimit(f, maxKeyFileBytes+1)); err != nil {
		return nil, fmt.Errorf("accel: ticket key file %s: %w", file, err)
	}
	if buf.Len() > maxKeyFileBytes {
		return nil, fmt.Errorf("accel: ticket key file %s is larger than %d KiB; is it the right file?", file, maxKeyFileBytes>>10)
	}
	keys, err := ParseTicketKeys(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("accel: ticket key file %s: %w", file, err)
	}
	return keys, nil
}

// ParseTicketKeys parses the contents of a ticket-key file.
func ParseTicketKeys(data []byte) ([][32]byte, error) {
	var keys [][32]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("line %d is not base64 (make a key with: openssl rand -base64 32)", line)
		}
		var k [32]byte
		switch {
		case len(raw) == 32:
			copy(k[:], raw)
		case len(raw) > 32:
			k = sha256.Sum256(raw)
		default:
			return nil, fmt.Errorf("line %d is a %d-byte key; use 32 random bytes (openssl rand -base64 32)", line, len(raw))
		}
		clear(raw)
		keys = append(keys, k)
		if len(keys) > maxFileKeys {
			return nil, fmt.Errorf("more than %d keys; keep the current one and a few previous", maxFileKeys)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("no keys (one base64 key per line, the first encrypts)")
	}
	return keys, nil
}

func ioLimit(f *os.File, n int64) *io.LimitedReader { return &io.LimitedReader{R: f, N: n} }
