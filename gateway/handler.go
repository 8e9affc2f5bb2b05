package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	pathpkg "path"
	"strconv"
	"strings"
	"time"

	"github.com/ztgate/ztgate/gateway/upstream"
)

// Access log field names, as documented in docs/logging.md.
const (
	FieldListener  = "listener"
	FieldRoute     = "route"
	FieldUpstream  = "upstream"
	FieldMethod    = "method"
	FieldHost      = "host"
	FieldPath      = "path"
	FieldProto     = "proto"
	FieldStatus    = "status"
	FieldBytes     = "bytes"
	FieldDuration  = "duration_ms"
	FieldClient    = "client"
	FieldPeer      = "peer"
	FieldRequestID = "request_id"
	FieldReason    = "reason"
	FieldError     = "error"
)

// HeaderRequestID carries the request id to upstreams and clients.
const HeaderRequestID = "X-Request-Id"

// Request is what the pipeline knows about one request. It is built once
// and passed down the stages; a stage adds what it learns.
type Request struct {
	HTTP      *http.Request
	Listener  string
	Route     string
	Upstream  string
	RequestID string
	Start     time.Time

	PeerAddr    netip.AddrPort // the direct TCP/QUIC peer
	ClientIP    netip.Addr     // the client, from trusted X-Forwarded-For
	PeerTrusted bool           // the direct peer is a trusted proxy
	Proto       string         // "https" (the scheme the client used)

	// The route's compiled header edits and timeout, for the forwarder.
	RouteHeaders         *upstream.HeaderOps
	RouteResponseHeaders *upstream.HeaderOps
	Timeout              time.Duration

	// Set by stages.
	LogAttrs        []slog.Attr // extra access-log fields (principal, decision)
	UpstreamHeaders http.Header // headers to add to the upstream request
	ResponseHeaders http.Header // headers to add to the response
}

// Stage is one check of the request pipeline (IP rule, authentication,
// authorization). It returns nil to continue or an error that ends the
// request; errors are mapped to responses in one place (writeError).
type Stage interface {
	Check(req *Request) error
}

// StageFunc adapts a function to Stage.
type StageFunc func(req *Request) error

// Check calls f.
func (f StageFunc) Check(req *Request) error { return f(req) }

// Denial is a stage's refusal: the status and a short public message.
// Reason goes to the log and metrics only.
type Denial struct {
	Status  int
	Message string // public, fixed text
	Reason  string // for logs and metrics, never sent to the client
	Headers http.Header
	Body    []byte // optional body (e.g. from a Rego decision)
	Cause   error
}

func (d *Denial) Error() string {
	if d.Cause != nil {
		return fmt.Sprintf("%d %s: %v", d.Status, d.Reason, d.Cause)
	}
	return fmt.Sprintf("%d %s", d.Status, d.Reason)
}

func (d *Denial) Unwrap() error { return d.Cause }

// listenerHandler serves the requests of one listener.
type listenerHandler struct {
	s    *Server
	name string
	h3   bool
}

// exchange is the per-request state of ServeHTTP, allocated once.
type exchange struct {
	req Request
	rec recorder
	rm  *routeMetrics // the series the request is counted in
}

func (h *listenerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rt := h.s.acquire()
	if rt != nil {
		defer rt.done()
	}
	x := &exchange{rec: recorder{ResponseWriter: w}, req: Request{HTTP: r, Listener: h.name, Start: start, Proto: "https"}}
	rec, req := &x.rec, &x.req
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				// The response was cut on purpose (an upstream broke
				// off mid-body): log it, then let net/http abort.
				if rec.reason == "" {
					rec.reason = "aborted"
				}
				h.finish(rt, x)
				panic(p)
			}
			h.s.log.Error("panic serving request", "request_id", req.RequestID, "panic", fmt.Sprint(p))
			if !rec.wroteHeader {
				writeError(rec, req, &Denial{Status: http.StatusInternalServerError, Message: "internal error", Reason: "panic"})
			}
		}
		h.finish(rt, x)
	}()
	if rt == nil {
		writeError(rec, req, &Denial{Status: http.StatusServiceUnavailable, Message: "not serving", Reason: "no_runtime"})
		return
	}
	lr, ok := rt.listeners[h.name]
	if !ok {
		rec.Header().Set("Connection", "close")
		writeError(rec, req, &Denial{Status: http.StatusServiceUnavailable, Message: "listener is closing", Reason: "listener_removed"})
		return
	}
	x.rm = lr.noRoute
	h.identify(lr, req)
	hdr := rec.Header()
	hdr[HeaderRequestID] = []string{req.RequestID}
	if lr.altSvc != "" && !h.h3 {
		hdr["Alt-Svc"] = []string{lr.altSvc}
	}
	if err := checkMessage(r); err != nil {
		writeError(rec, req, err)
		return
	}
	if err := normalizePath(r); err != nil {
		writeError(rec, req, err)
		return
	}
	host := normalizeHost(r.Host)
	rte := rt.router.Match(h.name, host, r.URL.Path, r.Method)
	if rte == nil {
		writeError(rec, req, &Denial{Status: http.StatusNotFound, Message: "no route", Reason: "no_route"})
		return
	}
	rr := lr.routes[rte]
	x.rm = rr.metrics
	req.Route, req.Upstream = rte.name, rte.upstream
	for _, st := range rr.stages {
		if err := st.Check(req); err != nil {
			writeError(rec, req, err)
			return
		}
	}
	req.RouteHeaders, req.RouteResponseHeaders, req.Timeout = rr.requestHeaders, rr.responseHeaders, rte.cfg.Timeout
	for k, vs := range req.ResponseHeaders {
		for _, v := range vs {
			hdr.Add(k, v)
		}
	}
	if d := rte.direct; d != nil {
		rr.responseHeaders.Apply(hdr)
		hdr.Set("Content-Type", d.ContentType)
		hdr.Set("Content-Length", strconv.Itoa(len(d.Body)))
		rec.WriteHeader(d.Status)
		if r.Method != http.MethodHead {
			io.WriteString(rec, d.Body)
		}
		return
	}
	if rt.ext.Forward == nil {
		writeError(rec, req, &Denial{Status: http.StatusServiceUnavailable, Message: "upstream unavailable", Reason: "no_forwarder"})
		return
	}
	if err := rt.ext.Forward(rec, req); err != nil {
		writeError(rec, req, err)
	}
}

// checkMessage refuses HTTP/2 and HTTP/3 requests with connection-specific
// header fields (RFC 9113 8.2.2, RFC 9114 4.2): they are malformed, and
// passed on to an HTTP/1.1 upstream they are a request-smuggling vector.
func checkMessage(r *http.Request) error {
	if r.ProtoMajor < 2 {
		return nil
	}
	for _, h := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"} {
		if _, ok := r.Header[h]; ok {
			return &Denial{Status: http.StatusBadRequest, Message: "connection-specific header in an HTTP/2 or HTTP/3 request", Reason: "malformed_request"}
		}
	}
	if te, ok := r.Header["Te"]; ok && (len(te) != 1 || !strings.EqualFold(strings.TrimSpace(te[0]), "trailers")) {
		return &Denial{Status: http.StatusBadRequest, Message: "TE other than trailers in an HTTP/2 or HTTP/3 request", Reason: "malformed_request"}
	}
	return nil
}

// normalizePath makes routing, authorization and the upstream see one
// path (see NormalizePath), rewriting the request in place.
func normalizePath(r *http.Request) error {
	if r.Method == http.MethodOptions && r.URL.Path == "*" {
		return nil
	}
	clean, err := NormalizePath(r.URL.Path, r.URL.RawPath)
	if err != nil {
		return &Denial{Status: http.StatusBadRequest, Message: err.Error(), Reason: "bad_path"}
	}
	if clean != r.URL.Path {
		r.URL.Path, r.URL.RawPath = clean, ""
	}
	return nil
}

// ErrBadPath is returned by NormalizePath for a path it refuses.
var ErrBadPath = errors.New("bad path")

// NormalizePath returns the path routing and authorization match on:
// dot segments resolved and repeated slashes merged (Istio's
// NORMALIZE_AND_MERGE_SLASHES), so "/api//admin" or "/x/../admin" cannot
// slip past a policy written for "/api/admin". Encoded slashes and
// backslashes in raw (%2F, %5C) are refused: the upstream may read them
// as separators the policy did not see. `ztgate policy check` uses the
// same function, so it decides on the path the gateway would.
func NormalizePath(path, raw string) (string, error) {
	if raw != "" {
		l := strings.ToLower(raw)
		if strings.Contains(l, "%2f") || strings.Contains(l, "%5c") {
			return "", fmt.Errorf("%w: encoded slash in path", ErrBadPath)
		}
	}
	if path == "" || path[0] != '/' {
		return "", ErrBadPath
	}
	if !needsClean(path) {
		return path, nil
	}
	clean := pathpkg.Clean(path)
	if strings.HasSuffix(path, "/") && clean != "/" {
		clean += "/"
	}
	return clean, nil
}

func needsClean(p string) bool {
	return strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") ||
		strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..") || strings.Contains(p, "\\")
}

// identify computes the client address, the request id and the scheme.
func (h *listenerHandler) identify(lr *listenerRuntime, req *Request) {
	r := req.HTTP
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		req.PeerAddr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	req.ClientIP = req.PeerAddr.Addr()
	req.PeerTrusted = trusted(lr.trusted, req.ClientIP)
	if req.PeerTrusted {
		req.ClientIP = clientFromXFF(r.Header.Values("X-Forwarded-For"), lr.trusted, req.ClientIP)
	}
	if id := r.Header.Get(HeaderRequestID); req.PeerTrusted && validRequestID(id) {
		req.RequestID = id
	} else {
		req.RequestID = newRequestID()
	}
}

func trusted(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientFromXFF walks X-Forwarded-For from the right, skipping trusted
// proxies; the first untrusted address is the client (nginx's
// real_ip_recursive). Garbage ends the walk at the last good address.
func clientFromXFF(values []string, ps []netip.Prefix, peer netip.Addr) netip.Addr {
	client := peer
	for i := len(values) - 1; i >= 0; i-- {
		parts := strings.Split(values[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return client
			}
			client = a.Unmap()
			if !trusted(ps, client) {
				return client
			}
		}
	}
	return client
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c == '-' || c == '_' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// newRequestID returns a random UUIDv4, as Envoy generates.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}

// writeError maps a pipeline error to the response: the status and a
// fixed short message with the request id as JSON. The cause is logged
// by finish, never sent.
func writeError(w *recorder, req *Request, err error) {
	var d *Denial
	if !errors.As(err, &d) {
		d = &Denial{Status: http.StatusBadGateway, Message: "upstream error", Reason: "upstream_error", Cause: err}
		if errors.Is(err, context.Canceled) {
			d.Status, d.Message, d.Reason = 499, "client closed request", "client_cancelled"
		}
	}
	w.err, w.reason = err, d.Reason
	if w.wroteHeader {
		// Too late for a status: the response is already streaming.
		// Abort so the client sees a broken response, not a short one.
		panic(http.ErrAbortHandler)
	}
	for k, vs := range d.Headers {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	status := d.Status
	if status == 499 {
		w.status = status
		return // nobody is listening
	}
	if len(d.Body) > 0 {
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		}
		w.WriteHeader(status)
		w.Write(d.Body)
		return
	}
	msg := d.Message
	if msg == "" {
		msg = http.StatusText(status)
	}
	body, _ := json.Marshal(struct {
		Status    int    `json:"status"`
		Error     string `json:"error"`
		RequestID string `json:"request_id"`
	}{status, msg, req.RequestID})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// finish writes the access log line and the metrics of one request.
func (h *listenerHandler) finish(rt *Runtime, x *exchange) {
	rec, req := &x.rec, &x.req
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	dur := time.Since(req.Start)
	route := req.Route
	if route == "" {
		route = "-"
	}
	if x.rm != nil {
		x.rm.observe(status, dur)
	} else {
		h.s.m.requests.WithLabelValues(h.name, route, strconv.Itoa(status)).Inc()
		h.s.m.duration.WithLabelValues(h.name, route).Observe(dur.Seconds())
	}
	if rec.reason != "" && rec.reason != "upstream_error" {
		h.s.m.denied.WithLabelValues(h.name, route, rec.reason).Inc()
	}
	if rt == nil || !rt.cfg.Log.AccessLogEnabled() {
		return
	}
	r := req.HTTP
	ctx := r.Context()
	if !h.s.alog.Enabled(ctx, slog.LevelInfo) {
		return
	}
	attrs := make([]slog.Attr, 0, 16+len(req.LogAttrs))
	attrs = append(attrs,
		slog.String(FieldRequestID, req.RequestID),
		slog.String(FieldListener, h.name),
		slog.String(FieldRoute, route),
		slog.String(FieldMethod, r.Method),
		slog.String(FieldHost, r.Host),
		slog.String(FieldPath, r.URL.Path),
		slog.String(FieldProto, r.Proto),
		slog.Int(FieldStatus, status),
		slog.Int64(FieldBytes, rec.bytes),
		slog.Float64(FieldDuration, float64(dur.Microseconds())/1000),
		slog.String(FieldClient, req.ClientIP.String()),
		slog.String(FieldPeer, req.PeerAddr.String()),
	)
	if req.Upstream != "" {
		attrs = append(attrs, slog.String(FieldUpstream, req.Upstream))
	}
	if rec.reason != "" {
		attrs = append(attrs, slog.String(FieldReason, rec.reason))
	}
	if rec.err != nil {
		attrs = append(attrs, slog.String(FieldError, rec.err.Error()))
	}
	attrs = append(attrs, req.LogAttrs...)
	h.s.alog.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
}

// recorder captures the status and size of a response. It unwraps for
// http.ResponseController (flush, hijack, deadlines).
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
	err         error
	reason      string
}

func (r *recorder) WriteHeader(code int) {
	if r.wroteHeader {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		r.ResponseWriter.WriteHeader(code) // informational: not final
		return
	}
	r.status, r.wroteHeader = code, true
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	n, err := io.Copy(r.ResponseWriter, src)
	r.bytes += n
	return n, err
}

func (r *recorder) Flush() {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil && !r.wroteHeader {
		r.status, r.wroteHeader = http.StatusSwitchingProtocols, true
	}
	return c, rw, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
