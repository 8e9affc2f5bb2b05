package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RequestInfo is what the gateway computed once for a request. Proxy
// fills the output fields.
type RequestInfo struct {
	// ClientIP is the client's address, already resolved from a trusted
	// X-Forwarded-For.
	ClientIP netip.Addr
	// TrustedPeer: the direct peer is a trusted proxy, so the inbound
	// X-Forwarded-* headers are kept and X-Forwarded-For gets the direct
	// peer's address (r.RemoteAddr) appended. Otherwise they are
	// replaced, X-Forwarded-For by ClientIP.
	TrustedPeer bool
	// Proto is the scheme the client used: "https" (or "http").
	Proto string
	// RequestID goes upstream as X-Request-Id.
	RequestID string
	// Route names the route, for logs.
	Route string
	// Timeout bounds the exchange up to the response headers, retries
	// included (0: the upstream's response_timeout).
	Timeout time.Duration
	// RequestHeaders and ResponseHeaders are the route's header edits.
	RequestHeaders  *HeaderOps
	ResponseHeaders *HeaderOps
	// Extra headers set on the upstream request after RequestHeaders
	// (e.g. from an authz decision); they replace same-named headers.
	Extra []Header

	// Outputs.
	Endpoint string // the endpoint of the last attempt
	Attempts int    // attempts made (1 + retries)
	Status   int    // the upstream's status, 0 if none
}

var errStreamIdle = errors.New("no response bytes within stream_idle_timeout")

// idempotent methods may be retried (RFC 9110 9.2.2).
func idempotent(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// trackedBody remembers whether the transport read from the request
// body, and hides Close from it (the server owns the inbound body), so a
// request whose body was never touched can be retried.
type trackedBody struct {
	r    io.ReadCloser
	read atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.r.Read(p)
}

func (b *trackedBody) Close() error { return nil }

// Proxy sends r to an endpoint of the pool and streams the response to w.
// On failure it returns an *Error and, unless the error says
// HeadersSent, has written nothing: answer with WriteError.
func (p *Pool) Proxy(w http.ResponseWriter, r *http.Request, info *RequestInfo) error {
	if p.tlsErr != nil {
		return &Error{Kind: KindTLSUnavailable, Upstream: p.name, Err: p.tlsErr}
	}
	if info == nil {
		info = &RequestInfo{}
	}
	p.begin()
	defer p.end()
	g := p.gen.Load()
	g.acquire()
	defer g.release()
	start := time.Now()

	timeout := info.Timeout
	if timeout <= 0 {
		timeout = p.cfg.ResponseTimeout
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	// One timer serves both phases: up to the response headers it is the
	// route/response timeout; while the body streams it is
	// stream_idle_timeout, reset after every read.
	var timedOut atomic.Bool
	timer := time.AfterFunc(timeout, func() {
		timedOut.Store(true)
		cancel()
	})
	defer timer.Stop()

	out := p.outbound(ctx, r, info)
	upgrade := out.Header.Get("Upgrade") != ""
	var body *trackedBody
	if out.Body != nil {
		body = &trackedBody{r: r.Body}
		out.Body = body
	}
	// Bodyless idempotent requests to an HTTP/1.1 upstream take the
	// h1 fast path; the rest go through http.Transport.
	h1 := g.h1
	if h1 != nil && !fastPath(out, upgrade) {
		h1 = nil
	}
	maxAttempts := 1
	if idempotent(r.Method) && !upgrade {
		maxAttempts += p.cfg.Retries.RetryAttempts()
	}
	var triedBuf [4]*endpoint
	tried := triedBuf[:0]
	var last *Error
	var next *endpoint // chosen before a response was discarded for a retry
	for attempt := 1; ; attempt++ {
		e := next
		if e == nil {
			e = p.pick(tried)
		}
		next = nil
		if e == nil {
			if last != nil {
				return last
			}
			return &Error{Kind: KindNoEndpoint, Upstream: p.name, Err: errors.New("no endpoint left to try")}
		}
		tried = append(tried, e)
		info.Endpoint, info.Attempts = e.addr, attempt

		// The first attempt sends out itself; a retry sends a copy, as
		// RoundTrip may still read the request it was given.
		req := out
		if attempt > 1 {
			c := *out
			req = &c
		}
		u := *out.URL
		u.Scheme = p.scheme
		u.Host = e.addr
		req.URL = &u
		e.outstanding.Add(1)
		var res *http.Response
		var err error
		if h1 != nil {
			res, err = h1.roundTrip(ctx, req, e.addr)
		} else {
			res, err = g.t.RoundTrip(req)
		}
		if err != nil {
			e.outstanding.Add(-1)
			kind := classify(err, r.Context())
			if timedOut.Load() {
				kind = KindTimeout
			}
			if kind == KindTLS && p.noSVID != nil && errors.Is(err, p.noSVID) {
				kind = KindTLSUnavailable // our identity is missing, not the endpoint's fault
			}
			e.counters.failure(kind)
			last = &Error{Kind: kind, Upstream: p.name, Endpoint: e.addr, Err: err}
			switch kind {
			case KindClientGone, KindTLSUnavailable:
				return last
			case KindTimeout:
				p.failure(e, kind.String())
				return last
			}
			p.failure(e, kind.String())
			// A body the transport read from cannot be replayed; a
			// connect failure happens before any byte is read.
			replayable := body == nil || (kind == KindConnect || kind == KindTLS) && !body.read.Load()
			retry := (kind == KindConnect || kind == KindTLS) && p.retryOn.connect ||
				kind == KindReset && p.retryOn.reset && body == nil
			if attempt < maxAttempts && retry && replayable && ctx.Err() == nil {
				p.metrics.retries.WithLabelValues(p.name, kind.String()).Inc()
				continue
			}
			return last
		}
		e.counters.status(res.StatusCode)
		if res.StatusCode >= 500 {
			p.failure(e, "status "+res.Status)
		} else {
			p.success(e)
		}
		if attempt < maxAttempts && body == nil && p.retryOn.onStatus(res.StatusCode) && ctx.Err() == nil {
			// Retry only when another endpoint is left; otherwise this
			// response is the best answer there is.
			if next = p.pick(tried); next != nil {
				drain(res.Body)
				e.outstanding.Add(-1)
				p.metrics.retries.WithLabelValues(p.name, strconv.Itoa(res.StatusCode)).Inc()
				continue
			}
		}
		if !timer.Stop() {
			// The timeout fired between the headers and here.
			res.Body.Close()
			e.outstanding.Add(-1)
			return &Error{Kind: KindTimeout, Upstream: p.name, Endpoint: e.addr, Err: context.DeadlineExceeded}
		}
		info.Status = res.StatusCode
		var perr error
		if res.StatusCode == http.StatusSwitchingProtocols {
			perr = p.upgraded(w, res, e)
		} else {
			idle := p.cfg.StreamIdleTimeout
			if idle > 0 {
				timer.Reset(idle)
			}
			perr = p.respond(w, res, info, e, r.Context(), func() {
				if idle > 0 {
					timer.Reset(idle)
				}
			})
			if timedOut.Load() {
				var pe *Error // declared here: taking its address allocates
				if errors.As(perr, &pe) && pe.Kind == KindAborted {
					pe.Kind, pe.Err = KindTimeout, errStreamIdle
				}
			}
		}
		e.outstanding.Add(-1)
		p.duration.Observe(time.Since(start).Seconds())
		return perr
	}
}

// outbound builds the upstream request: end-to-end headers, forwarding
// headers, the request id and the route's header edits.
func (p *Pool) outbound(ctx context.Context, r *http.Request, info *RequestInfo) *http.Request {
	out := r.WithContext(ctx) // URL is copied per attempt
	out.RequestURI = ""
	out.Close = false
	out.Host = r.Host
	h := make(http.Header, len(r.Header)+5)
	copyEndToEnd(h, r.Header)
	out.Header = h
	// One backing array for the values set here: fewer allocations.
	vals := make([]string, 0, 6)
	set := func(k, v string) {
		vals = append(vals, v)
		n := len(vals)
		h[k] = vals[n-1 : n : n]
	}
	if hasToken(r.Header, "Te", "trailers") {
		set("Te", "trailers")
	}
	if up := upgradeType(r.Header); up != "" && strings.EqualFold(up, "websocket") {
		set("Connection", "Upgrade")
		set("Upgrade", up)
	}

	proto := info.Proto
	if proto == "" {
		proto = "https"
		if r.TLS == nil {
			proto = "http"
		}
	}
	client := ""
	if info.ClientIP.IsValid() {
		client = info.ClientIP.Unmap().String()
	}
	if info.TrustedPeer {
		// Append the hop this request came from: the trusted proxy's own
		// address (ClientIP was already taken from the list).
		peer := client
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			peer = ap.Addr().Unmap().String()
		}
		if prior := h[hdrXFF]; len(prior) > 0 && peer != "" {
			set(hdrXFF, strings.Join(prior, ", ")+", "+peer)
		} else if peer != "" {
			set(hdrXFF, peer)
		}
		if len(h[hdrXFProto]) == 0 {
			set(hdrXFProto, proto)
		}
		if len(h[hdrXFHost]) == 0 {
			set(hdrXFHost, r.Host)
		}
	} else {
		delete(h, hdrForwarded)
		if client != "" {
			set(hdrXFF, client)
		} else {
			delete(h, hdrXFF)
		}
		set(hdrXFProto, proto)
		set(hdrXFHost, r.Host)
	}
	if info.RequestID != "" {
		set(hdrRequestID, info.RequestID)
	}
	if _, ok := h["User-Agent"]; !ok {
		set("User-Agent", "") // do not let net/http add Go's
	}
	info.RequestHeaders.Apply(h)
	for _, x := range info.Extra {
		h.Set(x.Name, x.Value)
	}
	if r.ContentLength == 0 {
		out.Body = nil
	}
	out.Trailer = r.Trailer
	return out
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// respond streams res to the client. Responses of unknown length and
// event streams are flushed after every read, so streaming works.
func (p *Pool) respond(w http.ResponseWriter, res *http.Response, info *RequestInfo, e *endpoint, client context.Context, progress func()) error {
	defer res.Body.Close()
	h := w.Header()
	gatewayAltSvc := h["Alt-Svc"]
	copyEndToEnd(h, res.Header)
	// Alt-Svc advertises the gateway's own protocols (HTTP/3); an
	// upstream's describes the upstream, which the client cannot reach.
	if gatewayAltSvc != nil {
		h["Alt-Svc"] = gatewayAltSvc
	} else {
		delete(h, "Alt-Svc")
	}
	info.ResponseHeaders.Apply(h)
	if len(res.Trailer) > 0 {
		names := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	w.WriteHeader(res.StatusCode)

	flush := res.ContentLength == -1 || strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream")
	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(w)
		_ = rc.Flush()
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			progress()
			if _, werr := w.Write(buf[:n]); werr != nil {
				return &Error{Kind: KindClientGone, Upstream: p.name, Endpoint: e.addr, HeadersSent: true, Err: werr}
			}
			if flush {
				if err := rc.Flush(); err != nil {
					return &Error{Kind: KindClientGone, Upstream: p.name, Endpoint: e.addr, HeadersSent: true, Err: err}
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			kind := KindAborted
			if client.Err() != nil {
				kind = KindClientGone
			}
			if kind == KindAborted {
				p.failure(e, "body aborted")
			}
			return &Error{Kind: kind, Upstream: p.name, Endpoint: e.addr, HeadersSent: true, Err: rerr}
		}
	}
	for k, vs := range res.Trailer {
		h[http.TrailerPrefix+k] = vs
	}
	return nil
}

// upgraded splices a switched protocol (WebSocket) between the client
// and the upstream, on HTTP/1.1 on both sides.
func (p *Pool) upgraded(w http.ResponseWriter, res *http.Response, e *endpoint) error {
	fail := func(err error) error {
		return &Error{Kind: KindUpgrade, Upstream: p.name, Endpoint: e.addr, Err: err}
	}
	up, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		res.Body.Close()
		return fail(errors.New("101 response without a writable body"))
	}
	defer up.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Time{})
	res.Body = nil
	res.Header = res.Header.Clone()
	if err := res.Write(brw); err != nil {
		return &Error{Kind: KindClientGone, Upstream: p.name, Endpoint: e.addr, HeadersSent: true, Err: err}
	}
	if err := brw.Flush(); err != nil {
		return &Error{Kind: KindClientGone, Upstream: p.name, Endpoint: e.addr, HeadersSent: true, Err: err}
	}
	// Both directions share one idle timer (stream_idle_timeout): a
	// connection with no bytes either way for that long is closed.
	idle := p.cfg.StreamIdleTimeout
	var idleTimer *time.Timer
	if idle > 0 {
		idleTimer = time.AfterFunc(idle, func() {
			conn.Close()
			up.Close()
		})
		defer idleTimer.Stop()
	}
	pump := func(dst io.Writer, src io.Reader) error {
		bp := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(bp)
		for {
			n, err := src.Read(*bp)
			if n > 0 {
				if idleTimer != nil {
					idleTimer.Reset(idle)
				}
				if _, werr := dst.Write((*bp)[:n]); werr != nil {
					return werr
				}
			}
			if err != nil {
				return err
			}
		}
	}
	errc := make(chan error, 2)
	go func() {
		// bytes the client sent after the handshake, then the rest
		errc <- pump(up, io.MultiReader(io.LimitReader(brw, int64(brw.Reader.Buffered())), conn))
	}()
	go func() {
		errc <- pump(conn, up)
	}()
	<-errc
	// one side finished: close both so the other copy ends too
	conn.Close()
	up.Close()
	<-errc
	return nil
}

func drain(b io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(b, 64<<10))
	b.Close()
}
