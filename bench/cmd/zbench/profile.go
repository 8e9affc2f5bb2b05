package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// profiler fetches a CPU profile from ztgate's admin server
// (/debug/pprof/profile, on with admin.pprof) while the load runs. One per
// profiled scenario and ztgate variant, in the last round; the sampling
// (100 Hz SIGPROF) costs about 1 % and is noted in the report.
type profiler struct {
	r    *runner
	key  string
	file string
	done chan error
}

func (r *runner) profile(sc scenario, t *target, round int) *profiler {
	if !sc.profile || t.p.name != "ztgate" || round != r.o.rounds {
		return nil
	}
	dir := filepath.Join(r.o.out, "profiles")
	if r.o.smoke {
		if sc.name != "proxy-h1" {
			return nil // the smoke test checks the profile path once
		}
		dir = filepath.Join(r.env.dir, "profiles")
	}
	os.MkdirAll(dir, 0o755)
	name := sc.name
	if t.variant != "" {
		name += "-" + strings.ReplaceAll(t.variant, " ", "-")
	}
	p := &profiler{r: r, key: sc.name + "/" + t.label(), file: filepath.Join(dir, name+".pprof"), done: make(chan error, 1)}
	d := r.o.duration
	if sc.name == "egress-bulk" {
		d = bulkDuration(d)
	}
	seconds := secs(d) - 1
	if seconds < 1 {
		seconds = 1
	}
	go func() {
		c := &http.Client{Timeout: time.Duration(seconds+10) * time.Second}
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", ztAdminPort, seconds))
		if err != nil {
			p.done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			p.done <- fmt.Errorf("admin /debug/pprof/profile: %s: %s", resp.Status, b)
			return
		}
		f, err := os.Create(p.file)
		if err != nil {
			p.done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		f.Close()
		p.done <- err
	}()
	return p
}

// wait returns once the profile is written and records it.
func (p *profiler) wait() error {
	if p == nil {
		return nil
	}
	if err := <-p.done; err != nil {
		return err
	}
	sum, err := summarizeProfile(p.r.env.peer("ztgate").bin, p.file)
	if err != nil {
		return err
	}
	if p.r.profiles == nil {
		p.r.profiles = map[string]profileSummary{}
	}
	p.r.profiles[p.key] = sum
	return nil
}

// profileSummary is what the report says about one profile: where the
// CPU went by area, and the top functions by own (flat) time.
type profileSummary struct {
	file    string
	total   float64 // seconds sampled
	areas   []share
	parts   []share // inclusive (cum) share of notable parts
	top     []share
	topText string
}

type share struct {
	name string
	pct  float64
}

// A line of `go tool pprof -top`: flat, flat%, sum%, cum, cum%, name. A
// zero is printed without a unit.
var pprofLine = regexp.MustCompile(`^\s*([\d.]+)(ns|us|µs|ms|s|min|h)?\s+([\d.]+)%\s+[\d.]+%\s+[\d.]+(?:ns|us|µs|ms|s|min|h)?\s+([\d.]+)%\s+(.+)$`)

// notable are parts of ztgate's work whose inclusive time (the largest
// cum% of a function with this prefix, i.e. the part's entry point) the
// report shows.
var notable = []struct{ name, prefix string }{
	{"TLS handshakes", "crypto/tls.(*Conn).serverHandshake"},
	{"TLS record reads", "crypto/tls.(*Conn).Read"},
	{"TLS record writes", "crypto/tls.(*Conn).Write"},
	{"HTTP/2 server", "net/http.(*http2serverConn)"},
	{"HTTP/2 server (x/net)", "golang.org/x/net/http2.(*serverConn)"},
	{"QUIC and HTTP/3", "github.com/quic-go/"},
	{"gateway pipeline", "github.com/ztgate/ztgate/gateway."},
	{"upstream proxy", "github.com/ztgate/ztgate/gateway/upstream"},
	{"authn (JWT)", "github.com/ztgate/ztgate/authn"},
	{"authz", "github.com/ztgate/ztgate/authz"},
	{"Rego (OPA)", "github.com/open-policy-agent/"},
	{"Rego on its workers (input + evaluation)", "github.com/ztgate/ztgate/authz/rego.(*evalPool).work"},
	{"egress", "github.com/ztgate/ztgate/egress"},
	{"dnsguard", "github.com/ztgate/ztgate/dnsguard"},
	{"logging (slog)", "log/slog"},
	{"metrics (prometheus)", "github.com/prometheus/"},
	{"background GC", "runtime.gcBgMarkWorker"},
}

func summarizeProfile(bin, file string) (profileSummary, error) {
	s := profileSummary{file: file}
	args := []string{"tool", "pprof", "-top", "-nodefraction=0", "-nodecount=100000"}
	if bin != "" {
		args = append(args, bin) // Go profiles carry their symbols; the binary only adds source lines
	}
	out, err := exec.Command("go", append(args, file)...).CombinedOutput()
	if err != nil {
		return s, fmt.Errorf("go tool pprof -top: %v\n%s", err, out)
	}
	areas := map[string]float64{}
	cum := map[string]float64{}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		m := pprofLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		v = seconds(v, m[2])
		s.total += v
		fn := m[5]
		areas[area(fn)] += v
		c, _ := strconv.ParseFloat(m[4], 64)
		for _, n := range notable {
			if strings.HasPrefix(fn, n.prefix) {
				cum[n.name] = max(cum[n.name], c)
			}
		}
		if len(s.top) < 12 {
			pct, _ := strconv.ParseFloat(m[3], 64)
			s.top = append(s.top, share{fn, pct})
			lines = append(lines, strings.TrimRight(l, " "))
		}
	}
	if s.total == 0 {
		return s, fmt.Errorf("%s: no samples in the profile:\n%s", file, out)
	}
	for k, v := range areas {
		s.areas = append(s.areas, share{k, 100 * v / s.total})
	}
	sort.Slice(s.areas, func(i, j int) bool { return s.areas[i].pct > s.areas[j].pct })
	for _, n := range notable {
		if c := cum[n.name]; c >= 1 {
			s.parts = append(s.parts, share{n.name, c})
		}
	}
	s.topText = strings.Join(lines, "\n")
	return s, nil
}

func seconds(v float64, unit string) float64 {
	switch unit {
	case "ns":
		return v / 1e9
	case "us", "µs":
		return v / 1e6
	case "ms":
		return v / 1e3
	case "min":
		return v * 60
	case "h":
		return v * 3600
	}
	return v
}

// area sorts a function into the part of the work it belongs to. Flat
// time in a syscall includes the kernel's work for it (on loopback, the
// TCP receive path of the peer runs inside the sender's write).
func area(fn string) string {
	has := func(prefixes ...string) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(fn, p) {
				return true
			}
		}
		return false
	}
	switch {
	case has("crypto/", "golang.org/x/crypto", "vendor/golang.org/x/crypto", "math/big", "internal/byteorder"):
		return "crypto (TLS handshakes, record encryption, JWT signatures)"
	case has("syscall.", "internal/runtime/syscall", "internal/poll.", "runtime.netpoll", "runtime/internal/syscall", "golang.org/x/sys"):
		return "syscalls and the kernel under them (network I/O)"
	case has("runtime.gc", "runtime.scan", "runtime.mark", "runtime.greyobject", "runtime.findObject", "runtime.malloc",
		"runtime.(*mspan)", "runtime.(*mheap)", "runtime.(*mcache)", "runtime.(*mcentral)", "runtime.(*gcWork)", "runtime.heapBits",
		"runtime.sweep", "runtime.bgsweep", "runtime.wbBuf", "runtime.bulkBarrier", "runtime.typePointers", "runtime.(*gcControllerState)",
		"runtime.nextFreeFast", "runtime.memclrNoHeapPointers", "runtime.newobject", "runtime.makeslice", "runtime.growslice",
		"runtime.(*sweepLocked)", "runtime.spanOf", "runtime.publicationBarrier", "runtime.(*spanSet)", "runtime.tryDeferToSpanScan",
		"runtime.convT", "runtime.arenaIndex", "runtime.getGCMask", "runtime.makeSpanClass", "runtime.deductAssistCredit", "runtime.memclr",
		"gcWriteBarrier", "runtime.gcWriteBarrier", "internal/runtime/gc"):
		return "allocation and garbage collection"
	case has("runtime.findfunc", "runtime.funcspdelta", "runtime.step", "runtime.copystack", "runtime.callers", "runtime.(*unwinder)",
		"runtime.pcvalue", "runtime.morestack", "runtime.newstack", "runtime.adjustframe", "runtime.funcInfo", "runtime.readvarint", "runtime.Callers"):
		return "stack growth and tracebacks"
	case has("runtime.schedule", "runtime.findRunnable", "runtime.futex", "runtime.park", "runtime.mcall", "runtime.gopark",
		"runtime.ready", "runtime.stealWork", "runtime.usleep", "runtime.notesleep", "runtime.notewakeup", "runtime.lock", "runtime.unlock",
		"runtime.runqgrab", "runtime.execute", "runtime.goready", "runtime.casgstatus", "runtime.wakep", "runtime.(*timers)", "runtime.checkTimers",
		"runtime.nanotime", "runtime.selectgo", "runtime.chan", "runtime.send", "runtime.recv", "runtime.goexit", "runtime.newproc", "runtime.gogo",
		"runtime.(*waitq)", "runtime.mPark", "runtime.stopm", "runtime.startm", "runtime.resetspinning", "runtime.runqget", "runtime.globrunq"):
		return "goroutine scheduling, timers, channels"
	case has("net/http", "golang.org/x/net/http2", "vendor/golang.org/x/net/http", "github.com/quic-go", "net/textproto", "bufio.", "mime"):
		return "HTTP/1, HTTP/2, HTTP/3 framing and headers"
	case has("github.com/miekg/dns"):
		return "DNS messages (miekg/dns)"
	case has("github.com/ztgate/ztgate/authn", "github.com/ztgate/ztgate/authz", "github.com/open-policy-agent", "github.com/lestrrat-go", "encoding/json"):
		return "policy: authn, authz, Rego, JSON"
	case has("github.com/ztgate/ztgate"):
		return "ztgate's own code (routing, proxy, logs, metrics)"
	case has("runtime."):
		return "runtime, other"
	}
	return "other (std library, strings, maps, sync)"
}
