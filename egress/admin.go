package egress

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"sync"
)

// topDenied counts denied destinations in bounded memory with the
// Space-Saving algorithm: at most cap entries; when full, a new name
// replaces the least counted one and inherits its count (so counts are
// upper bounds, exact for names that stayed in the table).
type topDenied struct {
	mu  sync.Mutex
	cap int
	m   map[deniedKey]*deniedEntry
}

type deniedKey struct {
	name string
	port uint16
}

type deniedEntry struct {
	Name       string `json:"name"`
	Port       uint16 `json:"port"`
	Count      uint64 `json:"count"`
	LastReason Reason `json:"last_reason"`
}

func newTopDenied(capacity int) *topDenied {
	return &topDenied{cap: capacity, m: make(map[deniedKey]*deniedEntry, capacity)}
}

func (t *topDenied) add(name string, port uint16, reason Reason) {
	if name == "" {
		name = "(none)"
	}
	k := deniedKey{name, port}
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.m[k]; ok {
		e.Count++
		e.LastReason = reason
		return
	}
	var count uint64
	if len(t.m) >= t.cap {
		var minK deniedKey
		var minE *deniedEntry
		for k, e := range t.m {
			if minE == nil || e.Count < minE.Count {
				minK, minE = k, e
			}
		}
		delete(t.m, minK)
		count = minE.Count
	}
	t.m[k] = &deniedEntry{Name: name, Port: port, Count: count + 1, LastReason: reason}
}

func (t *topDenied) top(n int) []deniedEntry {
	t.mu.Lock()
	out := make([]deniedEntry, 0, len(t.m))
	for _, e := range t.m {
		out = append(out, *e)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Name < out[j].Name
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// AdminStatus is the JSON document AdminHandler serves.
type AdminStatus struct {
	ActiveConnections int           `json:"active_connections"`
	TopDenied         []deniedEntry `json:"top_denied"`
}

// AdminHandler serves the egress status as JSON: active connections and
// the most denied destinations (?n= limits the list, default 50, at most
// 1000). Mount it on the admin server, e.g. at /egress.
func (p *Proxy) AdminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		n := 50
		if s := r.URL.Query().Get("n"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 1 {
				http.Error(w, "n must be a positive integer", http.StatusBadRequest)
				return
			}
			n = min(v, 1000)
		}
		st := AdminStatus{ActiveConnections: p.activeCount(), TopDenied: p.denied.top(n)}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
}
