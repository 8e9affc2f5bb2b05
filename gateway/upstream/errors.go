package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"syscall"
)

// Kind classifies an upstream failure. Its String is the value of the
// code label of ztgate_upstream_requests_total and of the reason field
// in logs.
type Kind uint8

const (
	// KindNoEndpoint: the pool had no endpoint left to try.
	KindNoEndpoint Kind = iota + 1
	// KindConnect: dialing the endpoint failed or timed out.
	KindConnect
	// KindTLS: the TLS handshake with the endpoint failed (bad
	// certificate, wrong name, SPIFFE ID mismatch).
	KindTLS
	// KindTLSUnavailable: the upstream needs SPIFFE mTLS and the gateway
	// has no SVID source.
	KindTLSUnavailable
	// KindTimeout: no response headers within the route timeout (or the
	// upstream's response_timeout).
	KindTimeout
	// KindReset: the connection broke before the response headers.
	KindReset
	// KindProtocol: the upstream sent something that is not HTTP.
	KindProtocol
	// KindClientGone: the client cancelled the request or went away.
	KindClientGone
	// KindAborted: the upstream broke off in the middle of the response
	// body, after the status line went to the client.
	KindAborted
	// KindUpgrade: a protocol upgrade (WebSocket) could not be proxied.
	KindUpgrade
)

var kindNames = [...]string{
	KindNoEndpoint:     "no_healthy_endpoint",
	KindConnect:        "connect_failure",
	KindTLS:            "tls_failure",
	KindTLSUnavailable: "tls_unavailable",
	KindTimeout:        "timeout",
	KindReset:          "reset",
	KindProtocol:       "protocol_error",
	KindClientGone:     "client_gone",
	KindAborted:        "aborted",
	KindUpgrade:        "upgrade_failure",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Error is a failure to proxy a request. Err holds the cause for the log;
// it never reaches the client.
type Error struct {
	Kind     Kind
	Upstream string
	Endpoint string // empty when no endpoint was tried
	// HeadersSent: the status line already went to the client, so the
	// only thing left to do is to abort the response.
	HeadersSent bool
	Err         error
}

func (e *Error) Error() string {
	s := "upstream " + strconv.Quote(e.Upstream)
	if e.Endpoint != "" {
		s += " endpoint " + e.Endpoint
	}
	s += ": " + e.Kind.String()
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Timeout reports whether the failure was a timeout (net.Error style).
func (e *Error) Timeout() bool { return e.Kind == KindTimeout }

// StatusClientClosed is logged (never sent) when the client went away,
// as nginx does.
const StatusClientClosed = 499

// Status maps an error from Proxy to the HTTP status the client gets:
// 503 when no endpoint can serve (none left, SPIFFE unavailable), 504 on
// timeout, 502 for a broken or refused upstream exchange, 499 (logged
// only) when the client went away. Errors that are not *Error are 502.
func Status(err error) int {
	var e *Error
	if !errors.As(err, &e) {
		return http.StatusBadGateway
	}
	switch e.Kind {
	case KindNoEndpoint, KindTLSUnavailable:
		return http.StatusServiceUnavailable
	case KindTimeout:
		return http.StatusGatewayTimeout
	case KindClientGone:
		return StatusClientClosed
	default:
		return http.StatusBadGateway
	}
}

var publicMessage = map[Kind]string{
	KindNoEndpoint:     "no healthy upstream",
	KindConnect:        "upstream connect error",
	KindTLS:            "upstream connect error",
	KindTLSUnavailable: "upstream identity unavailable",
	KindTimeout:        "upstream request timeout",
	KindReset:          "upstream connection reset",
	KindProtocol:       "upstream protocol error",
	KindUpgrade:        "upstream upgrade failed",
}

// PublicMessage is the short fixed text the client may see for err (no
// cause, no address): "upstream connect error", "no healthy upstream",
// "upstream request timeout", ...
func PublicMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		if m, ok := publicMessage[e.Kind]; ok {
			return m
		}
		if e.Kind == KindClientGone {
			return "client closed request"
		}
	}
	return "upstream error"
}

// Reason is the failure's Kind as spelled in logs and metrics
// (connect_failure, timeout, ...), or "upstream_error" for other errors.
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind.String()
	}
	return "upstream_error"
}

// HeadersSent reports whether the response was already under way when
// err happened: then no error status can be written, only an abort.
func HeadersSent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.HeadersSent
}

// LogValue logs an Error as a group of the documented fields.
func (e *Error) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String(LogUpstream, e.Upstream), slog.String(LogReason, e.Kind.String())}
	if e.Endpoint != "" {
		attrs = append(attrs, slog.String(LogEndpoint, e.Endpoint))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String(LogError, e.Err.Error()))
	}
	return slog.GroupValue(attrs...)
}

// WriteError answers the client for an error returned by Proxy: the
// status from Status and a short fixed body with the request id, never
// the cause. When the error says HeadersSent, the response is already
// under way and WriteError aborts it (panic(http.ErrAbortHandler), which
// net/http turns into a reset stream or closed connection) so the client
// cannot mistake a truncated body for a complete one. When the client is
// gone it writes nothing.
func WriteError(w http.ResponseWriter, err error, requestID string) {
	var e *Error
	if errors.As(err, &e) {
		if e.HeadersSent {
			if e.Kind == KindClientGone {
				return
			}
			panic(http.ErrAbortHandler)
		}
		if e.Kind == KindClientGone {
			return
		}
	}
	status := Status(err)
	msg := PublicMessage(err)
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(status)
	if requestID != "" {
		fmt.Fprintf(w, "%s (request id %s)\n", msg, requestID)
	} else {
		fmt.Fprintf(w, "%s\n", msg)
	}
}

// connectError marks a failure while dialing or handshaking, before a
// single byte of the request was written: always safe to retry.
type connectError struct {
	tls bool
	err error
}

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// classify turns a RoundTrip error into a Kind. ctx is the request's
// context (cancelled when the client leaves).
func classify(err error, clientCtx context.Context) Kind {
	var ce *connectError
	if errors.As(err, &ce) {
		if ce.tls && !isTimeout(ce.err) {
			return KindTLS
		}
		return KindConnect
	}
	if clientCtx.Err() != nil {
		return KindClientGone
	}
	var (
		cve *tls.CertificateVerificationError
		uae x509.UnknownAuthorityError
		hne x509.HostnameError
		rhe tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &cve), errors.As(err, &uae), errors.As(err, &hne):
		return KindTLS
	case errors.As(err, &rhe):
		return KindProtocol
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindConnect
	case isTimeout(err):
		return KindTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, net.ErrClosed):
		return KindReset
	}
	return KindReset
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
