package rego

import (
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/ztgate/ztgate/authz"
)

// inputValue builds the same document as Input directly as an OPA
// value, skipping the generic map conversion on the request path.
// TestInputValueMatchesInput keeps the two identical.
func inputValue(a *authz.Attributes) (ast.Value, error) {
	path := a.Path
	if a.RawQuery != "" {
		path += "?" + a.RawQuery
	}
	str := ast.StringTerm
	obj := func(items ...[2]*ast.Term) *ast.Term { return ast.ObjectTerm(items...) }
	kv := func(k string, v *ast.Term) [2]*ast.Term { return ast.Item(str(k), v) }

	headers := make([][2]*ast.Term, 0, len(a.Headers)+3)
	for k, v := range a.Headers {
		headers = append(headers, kv(k, str(strings.Join(v, ","))))
	}
	headers = append(headers, kv(":authority", str(a.Host)), kv(":method", str(a.Method)), kv(":path", str(path)))
	httpItems := []([2]*ast.Term){
		kv("id", str(a.RequestID)), kv("method", str(a.Method)), kv("path", str(path)),
		kv("host", str(a.Host)), kv("protocol", str(a.Protocol)), kv("headers", obj(headers...)),
	}
	if len(a.Body) > 0 {
		httpItems = append(httpItems, kv("body", str(string(a.Body))), kv("size", ast.IntNumberTerm(len(a.Body))))
	}
	var source [][2]*ast.Term
	if a.SourceIP.IsValid() {
		source = append(source, kv("address", obj(kv("socketAddress", obj(
			kv("address", str(a.SourceIP.String())), kv("portValue", ast.IntNumberTerm(int(a.SourcePort))))))))
	}
	if a.Peer.Principal != "" {
		source = append(source, kv("principal", str("spiffe://"+a.Peer.Principal)))
	}
	pp, pq := parsePathQuery(a.Path, a.RawQuery)
	ppTerms := make([]*ast.Term, len(pp))
	for i, s := range pp {
		ppTerms[i] = str(s.(string))
	}
	pqItems := make([][2]*ast.Term, 0, len(pq))
	for k, vs := range pq {
		l := vs.([]any)
		ts := make([]*ast.Term, len(l))
		for i, v := range l {
			ts[i] = str(v.(string))
		}
		pqItems = append(pqItems, kv(k, ast.ArrayTerm(ts...)))
	}
	items := []([2]*ast.Term){
		kv("attributes", obj(
			kv("source", obj(source...)),
			kv("destination", obj(kv("address", obj(kv("socketAddress", obj(kv("portValue", ast.IntNumberTerm(a.DestinationPort)))))))),
			kv("request", obj(kv("http", obj(httpItems...)))),
		)),
		kv("parsed_path", ast.ArrayTerm(ppTerms...)),
		kv("parsed_query", obj(pqItems...)),
		kv("truncated_body", ast.BooleanTerm(a.BodyTruncated)),
		kv("version", obj(kv("encoding", str("protojson")), kv("ext_authz", str("v3")))),
		kv("request_principal", str(a.RequestPrincipal)),
		kv("peer", obj(kv("principal", str(a.Peer.Principal)), kv("trust_domain", str(a.Peer.TrustDomain)),
			kv("namespace", str(a.Peer.Namespace)), kv("service_account", str(a.Peer.ServiceAccount)))),
	}
	if a.Claims != nil {
		claims, err := ast.InterfaceToValue(a.Claims)
		if err != nil {
			return nil, err
		}
		items = append(items, kv("jwt", obj(kv("claims", ast.NewTerm(claims)))))
	}
	if pb, ok := parseBody(a); ok {
		v, err := ast.InterfaceToValue(pb)
		if err != nil {
			return nil, err
		}
		items = append(items, kv("parsed_body", ast.NewTerm(v)))
	}
	return ast.NewObject(items...), nil
}
