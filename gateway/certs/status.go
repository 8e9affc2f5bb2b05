package certs

import (
	"encoding/json"
	"net/http"
	"time"
)

// CertStatus is one row of StatusHandler's answer: what a listener serves
// for one of its names.
type CertStatus struct {
	Listener string    `json:"listener"`
	Name     string    `json:"name"`
	Source   string    `json:"source"`
	Ready    bool      `json:"ready"`
	Error    string    `json:"error,omitempty"`
	Subject  string    `json:"subject,omitempty"`
	Issuer   string    `json:"issuer,omitempty"`
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	Stapled  bool      `json:"ocsp_stapled"`
}

// Status lists, for every TLS listener and name, the certificate that
// would be served (the latest-expiring one), or why there is none. It
// holds no private data.
func (m *Manager) Status() []CertStatus {
	s := m.snap.Load()
	if s == nil {
		return nil
	}
	m.failMu.Lock()
	defer m.failMu.Unlock()
	var out []CertStatus
	for _, ln := range s.order {
		ls := s.listeners[ln]
		for _, n := range ls.names {
			row := CertStatus{Listener: ln, Name: n, Source: ls.source.String()}
			for _, c := range m.candidates(s, ls, n) {
				if c.Leaf == nil || (!row.NotAfter.IsZero() && !c.Leaf.NotAfter.After(row.NotAfter)) {
					continue
				}
				row.Ready = true
				row.Subject = c.Leaf.Subject.String()
				row.Issuer = c.Leaf.Issuer.String()
				row.Serial = c.Leaf.SerialNumber.Text(16)
				row.NotAfter = c.Leaf.NotAfter.UTC()
				row.Stapled = len(c.OCSPStaple) > 0
			}
			if !row.Ready {
				row.Error = m.failures[n]
				if row.Error == "" {
					row.Error = "not obtained yet"
				}
			}
			out = append(out, row)
		}
	}
	return out
}

// StatusHandler serves Status as JSON, for the admin server
// (GET /certificates).
func (m *Manager) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(m.Status())
	})
}
