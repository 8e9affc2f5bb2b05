package svid

import (
	"encoding/json"
	"net/http"
	"time"
)

// Status is the JSON document of the admin /identity endpoint.
type Status struct {
	Enabled   bool           `json:"enabled"`
	Source    string         `json:"source"`            // workload_api, files, none
	Address   string         `json:"address,omitempty"` // socket or cert file
	Ready     bool           `json:"ready"`
	Reason    string         `json:"reason,omitempty"` // why not ready
	SVID      *SVIDStatus    `json:"svid,omitempty"`
	Rotations uint64         `json:"rotations"`
	LastError string         `json:"last_error,omitempty"`
	Bundles   []BundleStatus `json:"bundles"`
}

// SVIDStatus describes the current SVID (never its key).
type SVIDStatus struct {
	SPIFFEID         string    `json:"spiffe_id"`
	Serial           string    `json:"serial"`
	NotBefore        time.Time `json:"not_before"`
	NotAfter         time.Time `json:"not_after"`
	ExpiresInSeconds float64   `json:"expires_in_seconds"`
	ReceivedAt       time.Time `json:"received_at"`
}

// BundleStatus describes one trust bundle.
type BundleStatus struct {
	TrustDomain string    `json:"trust_domain"`
	Source      string    `json:"source"`             // workload_api, files, federation, static
	File        string    `json:"file,omitempty"`     // static
	Endpoint    string    `json:"endpoint,omitempty"` // federation
	Authorities int       `json:"authorities"`
	UpdatedAt   time.Time `json:"updated_at"`
	AgeSeconds  float64   `json:"age_seconds"`
}

// Status returns the current identity state.
func (s *Source) Status() Status {
	sn := s.snap.Load()
	now := s.now()
	st := Status{
		Enabled:   sn.enabled,
		Source:    sn.kind.String(),
		Address:   sn.addr,
		Rotations: sn.rotations,
		LastError: sn.lastErr,
		Bundles:   []BundleStatus{},
	}
	if err := s.Ready(); err != nil {
		st.Reason = err.Error()
	} else {
		st.Ready = true
	}
	if sn.svid != nil {
		leaf := sn.svid.Certificates[0]
		st.SVID = &SVIDStatus{
			SPIFFEID:         sn.svid.ID.String(),
			Serial:           serialHex(leaf),
			NotBefore:        leaf.NotBefore.UTC(),
			NotAfter:         leaf.NotAfter.UTC(),
			ExpiresInSeconds: leaf.NotAfter.Sub(now).Seconds(),
			ReceivedAt:       sn.svidAt.UTC(),
		}
	}
	for _, e := range sn.entries {
		file, endpoint := e.file, ""
		if e.origin == originFederation {
			file, endpoint = "", e.file
		}
		st.Bundles = append(st.Bundles, BundleStatus{
			TrustDomain: e.b.TrustDomain().Name(),
			Source:      e.origin,
			File:        file,
			Endpoint:    endpoint,
			Authorities: len(e.b.X509Authorities()),
			UpdatedAt:   e.updated.UTC(),
			AgeSeconds:  now.Sub(e.updated).Seconds(),
		})
	}
	return st
}

// AdminHandler serves Status as JSON (GET /identity on the admin
// listener). It returns 503 while not ready, so it doubles as a probe.
func (s *Source) AdminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		st := s.Status()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !st.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	})
}
