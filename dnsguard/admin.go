package dnsguard

import (
	"encoding/json"
	"net/http"
	"sort"
	"sync"

	"github.com/ztgate/ztgate/dnsguard/internal/lru"
	"github.com/ztgate/ztgate/dnsguard/tunnel"
)

const (
	maxAlertsKept  = 100
	maxBlockedKept = 1000
	topBlocked     = 20
)

// adminState keeps the recent alerts (ring) and blocked-name counts
// (capped LRU) for the admin endpoint.
type adminState struct {
	mu       sync.Mutex
	alerts   []*tunnel.Alert
	next     int
	blockedN *lru.LRU[string, *int]
}

func newAdminState() *adminState {
	return &adminState{blockedN: lru.New[string, *int](maxBlockedKept)}
}

func (a *adminState) alert(al *tunnel.Alert) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.alerts) < maxAlertsKept {
		a.alerts = append(a.alerts, al)
		return
	}
	a.alerts[a.next] = al
	a.next = (a.next + 1) % maxAlertsKept
}

func (a *adminState) blocked(name string) {
	if len(name) > 253 {
		name = name[:253]
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if n, ok := a.blockedN.Get(name); ok {
		*n++
		return
	}
	one := 1
	a.blockedN.Put(name, &one)
}

// BlockedName is one entry of the admin report's top blocked names.
type BlockedName struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

// Report is what AdminHandler serves.
type Report struct {
	Alerts  []*tunnel.Alert `json:"alerts"` // newest first
	Blocked []BlockedName   `json:"top_blocked"`
	Sizes   Sizes           `json:"sizes"`
}

// Report returns the recent tunnel alerts, the most blocked names (among
// the last 1000 distinct) and the table sizes.
func (s *Server) Report() Report {
	a := s.admin
	a.mu.Lock()
	r := Report{Alerts: make([]*tunnel.Alert, 0, len(a.alerts))}
	for i := len(a.alerts) - 1; i >= 0; i-- {
		r.Alerts = append(r.Alerts, a.alerts[(a.next+i)%len(a.alerts)])
	}
	a.blockedN.Range(func(k string, n *int) bool {
		r.Blocked = append(r.Blocked, BlockedName{k, *n})
		return true
	})
	a.mu.Unlock()
	sort.Slice(r.Blocked, func(i, j int) bool {
		if r.Blocked[i].Count != r.Blocked[j].Count {
			return r.Blocked[i].Count > r.Blocked[j].Count
		}
		return r.Blocked[i].Name < r.Blocked[j].Name
	})
	if len(r.Blocked) > topBlocked {
		r.Blocked = r.Blocked[:topBlocked]
	}
	r.Sizes = s.Sizes()
	return r
}

// AdminHandler serves Report as JSON on GET (mount it e.g. at /dns on the
// admin server).
func (s *Server) AdminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.Report())
	})
}
