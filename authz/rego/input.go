package rego

import (
	"encoding/json"
	"log/slog"
	"mime"
	"net/url"
	"strings"

	"github.com/ztgate/ztgate/authz"
)

// Input builds the policy input from a, in opa-envoy-plugin's v3 shape:
//
//	attributes.source.address.socketAddress.{address,portValue}
//	attributes.source.principal          (spiffe://..., as Envoy)
//	attributes.destination.address.socketAddress.portValue
//	attributes.request.http.{id,method,path,host,protocol,headers,body,size}
//	parsed_path, parsed_query, parsed_body, truncated_body, version
//
// plus ztgate's verified identity: jwt.claims, peer.{principal,
// trust_domain, namespace, service_account} and request_principal.
// http.path includes the query, as Envoy sends it. Header values of a
// repeated header are joined with ",".
func Input(a *authz.Attributes) map[string]any {
	path := a.Path
	if a.RawQuery != "" {
		path += "?" + a.RawQuery
	}
	headers := make(map[string]any, len(a.Headers)+3)
	for k, v := range a.Headers {
		headers[k] = strings.Join(v, ",")
	}
	headers[":authority"] = a.Host
	headers[":method"] = a.Method
	headers[":path"] = path
	httpReq := map[string]any{
		"id":       a.RequestID,
		"method":   a.Method,
		"path":     path,
		"host":     a.Host,
		"protocol": a.Protocol,
		"headers":  headers,
	}
	if len(a.Body) > 0 {
		httpReq["body"] = string(a.Body)
		httpReq["size"] = json.Number(itoa(len(a.Body)))
	}
	source := map[string]any{}
	if a.SourceIP.IsValid() {
		source["address"] = map[string]any{"socketAddress": map[string]any{
			"address": a.SourceIP.String(), "portValue": json.Number(itoa(int(a.SourcePort))),
		}}
	}
	if a.Peer.Principal != "" {
		source["principal"] = "spiffe://" + a.Peer.Principal
	}
	dest := map[string]any{"address": map[string]any{"socketAddress": map[string]any{"portValue": json.Number(itoa(a.DestinationPort))}}}
	parsedPath, parsedQuery := parsePathQuery(a.Path, a.RawQuery)
	in := map[string]any{
		"attributes": map[string]any{
			"source":      source,
			"destination": dest,
			"request":     map[string]any{"http": httpReq},
		},
		"parsed_path":       parsedPath,
		"parsed_query":      parsedQuery,
		"truncated_body":    a.BodyTruncated,
		"version":           map[string]any{"encoding": "protojson", "ext_authz": "v3"},
		"request_principal": a.RequestPrincipal,
		"peer": map[string]any{
			"principal": a.Peer.Principal, "trust_domain": a.Peer.TrustDomain,
			"namespace": a.Peer.Namespace, "service_account": a.Peer.ServiceAccount,
		},
	}
	if a.Claims != nil {
		in["jwt"] = map[string]any{"claims": a.Claims}
	}
	if pb, ok := parseBody(a); ok {
		in["parsed_body"] = pb
	}
	return in
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// parsePathQuery: the path split on "/" after trimming leading slashes,
// each segment percent-decoded; the query as url.ParseQuery gives it
// (lists of strings), as opa-envoy-plugin computes them.
func parsePathQuery(path, rawQuery string) ([]any, map[string]any) {
	segs := strings.Split(strings.TrimLeft(path, "/"), "/")
	pp := make([]any, len(segs))
	for i, s := range segs {
		if d, err := url.PathUnescape(s); err == nil {
			s = d
		}
		pp[i] = s
	}
	pq := map[string]any{}
	q, _ := url.ParseQuery(rawQuery)
	for k, vs := range q {
		l := make([]any, len(vs))
		for i, v := range vs {
			l[i] = v
		}
		pq[k] = l
	}
	return pp, pq
}

// parseBody decodes a complete JSON or form body for input.parsed_body:
// application/json (or +json, or no content type at all and valid JSON)
// and application/x-www-form-urlencoded.
func parseBody(a *authz.Attributes) (any, bool) {
	if len(a.Body) == 0 || a.BodyTruncated {
		return nil, false
	}
	ct, _, _ := mime.ParseMediaType(a.Header("content-type"))
	switch {
	// Without a content type, a body that parses as JSON is JSON (the
	// opa-envoy-plugin README's own example input relies on this).
	case ct == "application/json" || strings.HasSuffix(ct, "+json") || ct == "":
		dec := json.NewDecoder(strings.NewReader(string(a.Body)))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil || dec.More() {
			return nil, false
		}
		return v, true
	case ct == "application/x-www-form-urlencoded":
		q, err := url.ParseQuery(string(a.Body))
		if err != nil {
			return nil, false
		}
		out := map[string]any{}
		for k, vs := range q {
			l := make([]any, len(vs))
			for i, v := range vs {
				l[i] = v
			}
			out[k] = l
		}
		return out, true
	}
	return nil, false
}

// logInput renders the input for the decision log only when a record
// is actually written.
type logInput struct{ a *authz.Attributes }

func (in logInput) LogValue() slog.Value { return slog.AnyValue(redactInput(Input(in.a))) }

// redactInput copies the input with secret header values replaced, for
// the decision log. Claims are left out (they may be personal data).
func redactInput(in map[string]any) map[string]any {
	out := make(map[string]any, len(in))
	for k, v := range in {
		out[k] = v
	}
	delete(out, "jwt")
	attrs := in["attributes"].(map[string]any)
	req := attrs["request"].(map[string]any)
	h := req["http"].(map[string]any)
	hdrs := h["headers"].(map[string]any)
	red := make(map[string]any, len(hdrs))
	for k, v := range hdrs {
		red[k] = v
		if authz.IsSecretHeader(k) {
			red[k] = authz.Redacted
		}
	}
	h2 := make(map[string]any, len(h))
	for k, v := range h {
		h2[k] = v
	}
	h2["headers"] = red
	delete(h2, "body")
	out["attributes"] = map[string]any{"source": attrs["source"], "destination": attrs["destination"], "request": map[string]any{"http": h2}}
	delete(out, "parsed_body")
	return out
}
