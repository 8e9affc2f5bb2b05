package rego

import (
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/ztgate/ztgate/authz"
)

// Keys and constant values of the input document, made once: OPA treats
// terms as immutable and shares its own interned terms the same way.
var (
	kAttributes       = ast.StringTerm("attributes")
	kSource           = ast.StringTerm("source")
	kDestination      = ast.StringTerm("destination")
	kRequest          = ast.StringTerm("request")
	kHTTP             = ast.StringTerm("http")
	kAddress          = ast.StringTerm("address")
	kSocketAddress    = ast.StringTerm("socketAddress")
	kPortValue        = ast.StringTerm("portValue")
	kPrincipal        = ast.StringTerm("principal")
	kID               = ast.StringTerm("id")
	kMethod           = ast.StringTerm("method")
	kPath             = ast.StringTerm("path")
	kHost             = ast.StringTerm("host")
	kProtocol         = ast.StringTerm("protocol")
	kHeaders          = ast.StringTerm("headers")
	kBody             = ast.StringTerm("body")
	kSize             = ast.StringTerm("size")
	kAuthority        = ast.StringTerm(":authority")
	kPseudoMethod     = ast.StringTerm(":method")
	kPseudoPath       = ast.StringTerm(":path")
	kParsedPath       = ast.StringTerm("parsed_path")
	kParsedQuery      = ast.StringTerm("parsed_query")
	kParsedBody       = ast.StringTerm("parsed_body")
	kTruncatedBody    = ast.StringTerm("truncated_body")
	kVersion          = ast.StringTerm("version")
	kRequestPrincipal = ast.StringTerm("request_principal")
	kPeer             = ast.StringTerm("peer")
	kTrustDomain      = ast.StringTerm("trust_domain")
	kNamespace        = ast.StringTerm("namespace")
	kServiceAccount   = ast.StringTerm("service_account")
	kJWT              = ast.StringTerm("jwt")
	kClaims           = ast.StringTerm("claims")

	vVersion = ast.ObjectTerm(
		ast.Item(ast.StringTerm("encoding"), ast.StringTerm("protojson")),
		ast.Item(ast.StringTerm("ext_authz"), ast.StringTerm("v3")))
	vEmptyObject = ast.ObjectTerm()
	vEmptyString = ast.StringTerm("")
	vEmptyPeer   = ast.ObjectTerm(ast.Item(kPrincipal, vEmptyString), ast.Item(kTrustDomain, vEmptyString),
		ast.Item(kNamespace, vEmptyString), ast.Item(kServiceAccount, vEmptyString))
	vRootPath = ast.ArrayTerm(vEmptyString) // parsed_path of "/"
)

// str is a string term; common strings (methods, "GET", "") come from
// OPA's interned terms.
func str(s string) *ast.Term {
	if s == "" {
		return vEmptyString
	}
	return ast.InternedTerm(s)
}

// fields collects the items of one object of fixed shape (at most 9
// keys), on the stack; key/value pairs are added only where the policy
// reads them (need).
type fields struct {
	n  int
	kv [9][2]*ast.Term
}

func (f *fields) add(k, v *ast.Term) {
	f.kv[f.n] = [2]*ast.Term{k, v}
	f.n++
}

func (f *fields) term() *ast.Term { return ast.ObjectTerm(f.kv[:f.n]...) }

// items collects the items of an object with any number of keys.
type items [][2]*ast.Term

func (f *items) add(k, v *ast.Term) { *f = append(*f, [2]*ast.Term{k, v}) }

// inputValue builds the document Input describes directly as an OPA
// value, skipping the generic map conversion on the request path, and
// only the parts n says the policy can read (needAll: everything).
// TestInputValueMatchesInput keeps the whole document identical to
// Input's; TestPrunedInput checks that pruning never changes a result.
func inputValue(a *authz.Attributes, n *need, jwtKey *jwtMemoKey) (ast.Value, error) {
	var top fields
	if c := n.child("attributes"); c != nil {
		top.add(kAttributes, attributesTerm(a, c))
	}
	if n.child("parsed_path") != nil {
		top.add(kParsedPath, parsedPathTerm(a.Path))
	}
	if n.child("parsed_query") != nil {
		top.add(kParsedQuery, parsedQueryTerm(a.RawQuery))
	}
	if n.child("truncated_body") != nil {
		top.add(kTruncatedBody, ast.InternedTerm(a.BodyTruncated))
	}
	if n.child("version") != nil {
		top.add(kVersion, vVersion)
	}
	if n.child("request_principal") != nil {
		top.add(kRequestPrincipal, str(a.RequestPrincipal))
	}
	if c := n.child("peer"); c != nil {
		top.add(kPeer, peerTerm(a, c))
	}
	if c := n.child("jwt"); c != nil && a.Claims != nil {
		v, err := jwtTerm(a, c, jwtKey)
		if err != nil {
			return nil, err
		}
		top.add(kJWT, v)
	}
	if n.child("parsed_body") != nil {
		if pb, ok := parseBody(a); ok {
			v, err := ast.InterfaceToValue(pb)
			if err != nil {
				return nil, err
			}
			top.add(kParsedBody, ast.NewTerm(v))
		}
	}
	return ast.NewObject(top.kv[:top.n]...), nil
}

func attributesTerm(a *authz.Attributes, n *need) *ast.Term {
	var f fields
	if c := n.child("source"); c != nil {
		var src fields
		if a.SourceIP.IsValid() && c.child("address") != nil {
			src.add(kAddress, ast.ObjectTerm(ast.Item(kSocketAddress, ast.ObjectTerm(
				ast.Item(kAddress, ast.StringTerm(a.SourceIP.String())),
				ast.Item(kPortValue, ast.InternedTerm(int(a.SourcePort)))))))
		}
		if a.Peer.Principal != "" && c.child("principal") != nil {
			src.add(kPrincipal, ast.StringTerm("spiffe://"+a.Peer.Principal))
		}
		f.add(kSource, src.term())
	}
	if n.child("destination") != nil {
		f.add(kDestination, ast.ObjectTerm(ast.Item(kAddress, ast.ObjectTerm(ast.Item(kSocketAddress,
			ast.ObjectTerm(ast.Item(kPortValue, ast.InternedTerm(a.DestinationPort))))))))
	}
	if c := n.child("request").child("http"); c != nil {
		f.add(kRequest, ast.ObjectTerm(ast.Item(kHTTP, httpTerm(a, c))))
	} else if n.child("request") != nil {
		f.add(kRequest, vEmptyObject)
	}
	return f.term()
}

func httpTerm(a *authz.Attributes, n *need) *ast.Term {
	var path *ast.Term
	pathTerm := func() *ast.Term {
		if path == nil {
			if a.RawQuery == "" {
				path = str(a.Path)
			} else {
				path = ast.StringTerm(a.Path + "?" + a.RawQuery)
			}
		}
		return path
	}
	var f fields
	if n.child("id") != nil {
		f.add(kID, str(a.RequestID))
	}
	if n.child("method") != nil {
		f.add(kMethod, str(a.Method))
	}
	if n.child("path") != nil {
		f.add(kPath, pathTerm())
	}
	if n.child("host") != nil {
		f.add(kHost, str(a.Host))
	}
	if n.child("protocol") != nil {
		f.add(kProtocol, str(a.Protocol))
	}
	if c := n.child("headers"); c != nil {
		h := make(items, 0, len(a.Headers)+3)
		for k, v := range a.Headers {
			if c.child(k) == nil {
				continue
			}
			var s string
			if len(v) == 1 {
				s = v[0]
			} else {
				s = strings.Join(v, ",")
			}
			h.add(ast.StringTerm(k), str(s))
		}
		if c.child(":authority") != nil {
			h.add(kAuthority, str(a.Host))
		}
		if c.child(":method") != nil {
			h.add(kPseudoMethod, str(a.Method))
		}
		if c.child(":path") != nil {
			h.add(kPseudoPath, pathTerm())
		}
		f.add(kHeaders, ast.ObjectTerm(h...))
	}
	if len(a.Body) > 0 {
		if n.child("body") != nil {
			f.add(kBody, ast.StringTerm(string(a.Body)))
		}
		if n.child("size") != nil {
			f.add(kSize, ast.InternedTerm(len(a.Body)))
		}
	}
	return f.term()
}

func parsedPathTerm(path string) *ast.Term {
	if path == "/" {
		return vRootPath
	}
	pp, _ := parsePathQuery(path, "")
	ts := make([]*ast.Term, len(pp))
	for i, s := range pp {
		ts[i] = str(s.(string))
	}
	return ast.ArrayTerm(ts...)
}

func parsedQueryTerm(rawQuery string) *ast.Term {
	if rawQuery == "" {
		return vEmptyObject
	}
	_, pq := parsePathQuery("", rawQuery)
	f := make(items, 0, len(pq))
	for k, vs := range pq {
		l := vs.([]any)
		ts := make([]*ast.Term, len(l))
		for i, v := range l {
			ts[i] = str(v.(string))
		}
		f.add(ast.StringTerm(k), ast.ArrayTerm(ts...))
	}
	return ast.ObjectTerm(f...)
}

func peerTerm(a *authz.Attributes, n *need) *ast.Term {
	if a.Peer == (authz.Peer{}) && n.all {
		return vEmptyPeer
	}
	var f fields
	if n.child("principal") != nil {
		f.add(kPrincipal, str(a.Peer.Principal))
	}
	if n.child("trust_domain") != nil {
		f.add(kTrustDomain, str(a.Peer.TrustDomain))
	}
	if n.child("namespace") != nil {
		f.add(kNamespace, str(a.Peer.Namespace))
	}
	if n.child("service_account") != nil {
		f.add(kServiceAccount, str(a.Peer.ServiceAccount))
	}
	return f.term()
}

// jwtMemoKey names input.jwt, as a policy with need n reads it, in an
// identity's memo (authz.Attributes.ClaimsMemo). Equal needs share one
// entry, also across reloads, so an identity holds one per distinct
// need, not one per policy or per reload.
type jwtMemoKey struct{ need string }

// jwtTerm is input.jwt: {"claims": the claims n reads}. The claims of a
// verified token never change and are shared by every request that
// presents it, so the converted value is kept in the identity's memo
// and built once per token rather than once per request.
func jwtTerm(a *authz.Attributes, n *need, key *jwtMemoKey) (*ast.Term, error) {
	if a.ClaimsMemo != nil && key != nil {
		if v, ok := a.ClaimsMemo.Load(*key); ok {
			return v.(*ast.Term), nil
		}
	}
	v, err := claimsTerm(a.Claims, n.child("claims"))
	if err != nil {
		return nil, err
	}
	var jwt fields
	if v != nil {
		jwt.add(kClaims, v)
	}
	t := jwt.term()
	if a.ClaimsMemo != nil && key != nil {
		a.ClaimsMemo.Store(*key, t)
	}
	return t, nil
}

// claimsTerm converts the claims the policy reads: all of them, or only
// the named ones (input.jwt.claims.scope converts one string, not the
// whole token).
func claimsTerm(claims map[string]any, n *need) (*ast.Term, error) {
	if n == nil {
		return nil, nil
	}
	if n.all {
		v, err := ast.InterfaceToValue(claims)
		if err != nil {
			return nil, err
		}
		return ast.NewTerm(v), nil
	}
	f := make(items, 0, len(n.kids))
	for k, c := range n.kids {
		x, ok := claims[k]
		if !ok {
			continue
		}
		var v ast.Value
		var err error
		if m, isMap := x.(map[string]any); isMap && !c.all {
			t, err := claimsTerm(m, c)
			if err != nil {
				return nil, err
			}
			v = t.Value
		} else if v, err = ast.InterfaceToValue(x); err != nil {
			return nil, err
		}
		f.add(ast.StringTerm(k), ast.NewTerm(v))
	}
	return ast.ObjectTerm(f...), nil
}
