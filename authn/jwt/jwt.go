// Package jwt verifies JSON Web Tokens on ingress requests with the
// semantics of Istio's RequestAuthentication: a request without a token
// passes unauthenticated (authorization decides), a request with an
// invalid token is refused with 401, and a valid token yields the request
// principal iss/sub and its claims.
package jwt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/authn"
	"github.com/ztgate/ztgate/configs"
)

// Authenticator verifies tokens for one compiled config. It is immutable
// and safe for concurrent use; build a new one on reload and Close the
// old one once no request uses it.
type Authenticator struct {
	providers []*provider
	byRoute   map[string][]*provider // route name → providers that apply
	global    []*provider            // providers with no routes: restriction
	cache     *tokenCache
	metrics   *metrics
	cacheHit  prometheus.Counter
	cacheMiss prometheus.Counter
	releases  []func()
	now       func() time.Time
}

// provider is one compiled authn.jwt[] entry.
type provider struct {
	name      string
	issuer    string
	audiences map[string]bool
	algs      map[string]jwa.SignatureAlgorithm
	skew      time.Duration
	maxBytes  int
	locations []location
	forward   bool
	outputs   []claimHeader
	keys      keySource
	ok        prometheus.Counter // ztgate_authn_jwt_total{provider, result="ok"}
}

type claimHeader struct {
	header string
	path   []string
}

// New compiles the authn section of cfg. Remote JWKS are taken from
// deps.Keys (fetched in the background; see KeyCache.Ready).
func New(cfg *configs.Config, deps Deps) (*Authenticator, error) {
	keys := deps.Keys
	if keys == nil {
		keys = NewKeyCache(Deps{Logger: deps.Logger})
	}
	a := &Authenticator{
		byRoute: map[string][]*provider{},
		cache:   newTokenCache(cfg.Authn.TokenCacheSize),
		metrics: keys.metrics,
		now:     time.Now,
	}
	a.cacheHit = a.metrics.cache.WithLabelValues("hit")
	a.cacheMiss = a.metrics.cache.WithLabelValues("miss")
	for i := range cfg.Authn.JWT {
		pc := &cfg.Authn.JWT[i]
		p, err := a.compile(pc, keys, deps.Offline)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("authn: jwt[%d] (%s): %w", i, pc.Name, err)
		}
		a.providers = append(a.providers, p)
		if len(pc.Routes) == 0 {
			a.global = append(a.global, p)
		}
	}
	for _, r := range cfg.Routes {
		list := append([]*provider(nil), a.global...)
		for i := range cfg.Authn.JWT {
			for _, rn := range cfg.Authn.JWT[i].Routes {
				if rn == r.Name {
					list = append(list, a.providers[i])
				}
			}
		}
		a.byRoute[r.Name] = list
	}
	return a, nil
}

func (a *Authenticator) compile(pc *configs.JWTProvider, keys *KeyCache, offline bool) (*provider, error) {
	p := &provider{
		name:      pc.Name,
		issuer:    pc.Issuer,
		algs:      map[string]jwa.SignatureAlgorithm{},
		skew:      pc.ClockSkew,
		maxBytes:  pc.MaxTokenBytes,
		locations: compileLocations(pc),
		forward:   pc.ForwardOriginalToken,
		ok:        a.metrics.verifications.WithLabelValues(pc.Name, "ok"),
	}
	if p.maxBytes <= 0 {
		p.maxBytes = configs.DefaultMaxTokenBytes
	}
	if len(pc.Audiences) > 0 {
		p.audiences = map[string]bool{}
		for _, aud := range pc.Audiences {
			p.audiences[aud] = true
		}
	}
	algs := pc.Algorithms
	if len(algs) == 0 {
		algs = configs.JWTAlgorithms
	}
	for _, s := range algs {
		var alg jwa.SignatureAlgorithm
		if err := alg.Accept(s); err != nil || strings.HasPrefix(s, "HS") || s == "none" {
			return nil, fmt.Errorf("algorithms: %q is not an asymmetric signature algorithm", s)
		}
		p.algs[s] = alg
	}
	for _, o := range pc.OutputClaimToHeaders {
		p.outputs = append(p.outputs, claimHeader{header: http.CanonicalHeaderKey(o.Header), path: strings.Split(o.Claim, ".")})
	}
	switch {
	case pc.JWKSURI != "" && offline:
		p.keys = offlineKeys(pc.JWKSURI)
	case pc.JWKSURI != "":
		r, release, err := keys.acquire(remoteSpec{uri: pc.JWKSURI, ca: pc.JWKSCA, refresh: pc.JWKSRefresh, refetchMinPeriod: pc.JWKSRefetchMinInterval})
		if err != nil {
			return nil, err
		}
		a.releases = append(a.releases, release)
		p.keys = r
	case pc.JWKS != "":
		ks, err := parseJWKS([]byte(pc.JWKS))
		if err != nil {
			return nil, fmt.Errorf("jwks: %w", err)
		}
		p.keys = staticKeys{ks}
	default:
		data, err := os.ReadFile(pc.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("jwks_file: %w", err)
		}
		ks, err := parseJWKS(data)
		if err != nil {
			return nil, fmt.Errorf("jwks_file %s: %w", pc.JWKSFile, err)
		}
		p.keys = staticKeys{ks}
	}
	return p, nil
}

// Close releases the remote JWKS this Authenticator uses; an entry no
// other Authenticator uses stops refreshing.
func (a *Authenticator) Close() {
	for _, r := range a.releases {
		r()
	}
	a.releases = nil
}

// providersFor returns the providers that apply to a route.
func (a *Authenticator) providersFor(route string) []*provider {
	if l, ok := a.byRoute[route]; ok {
		return l
	}
	return a.global
}

// candidate is a token found in a request and where.
type candidate struct {
	tok  string
	prov *provider
	loc  location
}

// Authenticate finds and verifies the request's token for the route.
// No token: (nil, nil), the request continues unauthenticated. An
// invalid token: an *Error (401, see WWWAuthenticate). A valid token: the
// identity; the token is then removed from the request unless the
// provider forwards it, and output_claim_to_headers are set. The
// configured claim headers are always removed from the client's request.
func (a *Authenticator) Authenticate(r *http.Request, route string) (*authn.Identity, error) {
	provs := a.providersFor(route)
	if len(provs) == 0 {
		return nil, nil
	}
	for _, p := range provs {
		for _, o := range p.outputs {
			r.Header.Del(o.header)
		}
	}
	var cands []candidate
	for _, p := range provs {
		for _, loc := range p.locations {
			for _, tok := range extract(r, loc) {
				cands = append(cands, candidate{tok: tok, prov: p, loc: loc})
			}
		}
	}
	if len(cands) == 0 {
		return nil, nil
	}
	tok := cands[0].tok
	for _, c := range cands[1:] {
		if c.tok != tok {
			return nil, a.count(nil, fail(ReasonMultiple, "", "tokens found in %s and %s", cands[0].loc, c.loc))
		}
	}
	id, p, err := a.verifyCandidates(r.Context(), tok, cands)
	if err != nil {
		return nil, err
	}
	for _, c := range cands {
		if !p.forward {
			strip(r, c.loc, tok)
		}
	}
	for _, o := range p.outputs {
		if v, ok := claimString(id.Claims, o.path); ok {
			r.Header.Set(o.header, v)
		}
	}
	return id, nil
}

// Verify checks a raw token against the providers of a route, without a
// request (for tools such as `ztgate policy check`).
func (a *Authenticator) Verify(tok, route string) (*authn.Identity, error) {
	var cands []candidate
	for _, p := range a.providersFor(route) {
		cands = append(cands, candidate{tok: tok, prov: p})
	}
	if len(cands) == 0 {
		return nil, fail(ReasonUnknownIssuer, "", "no JWT provider applies to route %q", route)
	}
	id, _, err := a.verifyCandidates(context.Background(), tok, cands)
	return id, err
}

func (a *Authenticator) verifyCandidates(ctx context.Context, tok string, cands []candidate) (*authn.Identity, *provider, error) {
	limit := 0
	for _, c := range cands {
		limit = max(limit, c.prov.maxBytes)
	}
	if len(tok) > limit {
		return nil, nil, a.count(cands[0].prov, fail(ReasonTooLarge, cands[0].prov.name, "%d bytes (limit %d)", len(tok), limit))
	}
	now := a.now()
	key := tokenKey(tok)
	if e, ok := a.cache.get(key, now); ok {
		for _, c := range cands {
			if c.prov == e.provider {
				a.cacheHit.Inc()
				e.provider.ok.Inc()
				return e.id, e.provider, nil
			}
		}
	}
	if a.cache != nil {
		a.cacheMiss.Inc()
	}
	hs, ps, _, err := splitToken(tok)
	if err != nil {
		return nil, nil, a.count(nil, fail(ReasonMalformed, "", "%v", err))
	}
	hd, err := parseHeader(hs)
	if err != nil {
		return nil, nil, a.count(nil, fail(ReasonMalformed, "", "%v", err))
	}
	iss, err := peekIssuer(ps)
	if err != nil {
		return nil, nil, a.count(nil, fail(ReasonMalformed, "", "%v", err))
	}
	var p *provider
	for _, c := range cands {
		if c.prov.issuer == iss {
			p = c.prov
			break
		}
	}
	if p == nil {
		if distinct(cands) == 1 {
			return nil, nil, a.count(cands[0].prov, fail(ReasonBadIssuer, cands[0].prov.name, "iss %q, want %q", clip(iss), cands[0].prov.issuer))
		}
		return nil, nil, a.count(nil, fail(ReasonUnknownIssuer, "", "iss %q matches no provider of this route", clip(iss)))
	}
	if len(tok) > p.maxBytes {
		return nil, nil, a.count(p, fail(ReasonTooLarge, p.name, "%d bytes (limit %d)", len(tok), p.maxBytes))
	}
	id, until, verr := p.verify(ctx, tok, hd, now)
	if verr != nil {
		return nil, nil, a.count(p, verr)
	}
	if a.cache != nil && until.After(now) {
		id.Memo = new(sync.Map) // shared from now on, like the identity
		a.cache.put(&cacheEntry{key: key, id: id, provider: p, until: until})
	}
	p.ok.Inc()
	return id, p, nil
}

func distinct(cands []candidate) int {
	n := 0
	for i, c := range cands {
		dup := false
		for _, d := range cands[:i] {
			dup = dup || d.prov == c.prov
		}
		if !dup {
			n++
		}
	}
	return n
}

func (a *Authenticator) count(p *provider, err *Error) *Error {
	name := ""
	if p != nil {
		name = p.name
	}
	a.metrics.verifications.WithLabelValues(name, err.Reason.String()).Inc()
	return err
}

// verify checks the signature and the registered claims. It returns the
// identity and the time until which it may be cached (exp, or zero).
func (p *provider) verify(ctx context.Context, tok string, hd header, now time.Time) (*authn.Identity, time.Time, *Error) {
	alg, ok := p.algs[hd.Alg]
	if !ok {
		return nil, time.Time{}, fail(ReasonAlgNotAllowed, p.name, "alg %q is not allowed for this issuer", clip(hd.Alg))
	}
	if len(hd.Crit) > 0 && string(hd.Crit) != "null" {
		return nil, time.Time{}, fail(ReasonMalformed, p.name, "crit header parameters are not supported")
	}
	var keys []*pubKey
	ks, err := p.keys.current()
	if err == nil {
		keys = ks.candidates(hd.Kid, hd.Alg)
	}
	if len(keys) == 0 {
		// Unknown kid, or no keys yet: one rate-limited refetch, shared by
		// every request that asks while it runs.
		ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
		fresh, refetched := p.keys.refetch(ctx)
		cancel()
		if refetched && fresh != nil {
			keys = fresh.candidates(hd.Kid, hd.Alg)
		}
		if fresh == nil {
			if _, err = p.keys.current(); err == nil {
				err = errors.New("no keys")
			}
			return nil, time.Time{}, fail(ReasonNoKeys, p.name, "%v", err)
		}
		if len(keys) == 0 {
			why := "no key for kid %q and alg %s"
			if !refetched {
				why += " (JWKS refetch rate-limited)"
			}
			return nil, time.Time{}, fail(ReasonUnknownKey, p.name, why, clip(hd.Kid), hd.Alg)
		}
	}
	var payload []byte
	for _, k := range keys {
		if payload, err = jws.Verify([]byte(tok), jws.WithKey(alg, k.key)); err == nil {
			break
		}
	}
	if err != nil {
		return nil, time.Time{}, fail(ReasonBadSignature, p.name, "signature does not verify with kid %q", clip(hd.Kid))
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil || claims == nil {
		return nil, time.Time{}, fail(ReasonMalformed, p.name, "payload is not a JSON object")
	}
	return p.checkClaims(claims, now)
}

func (p *provider) checkClaims(claims map[string]any, now time.Time) (*authn.Identity, time.Time, *Error) {
	id := &authn.Identity{Claims: claims, Provider: p.name}
	var ok bool
	if id.Issuer, ok = claims["iss"].(string); !ok || id.Issuer != p.issuer {
		return nil, time.Time{}, fail(ReasonBadIssuer, p.name, "iss %q, want %q", clip(fmt.Sprint(claims["iss"])), p.issuer)
	}
	if v, present := claims["sub"]; present {
		if id.Subject, ok = v.(string); !ok {
			return nil, time.Time{}, fail(ReasonBadClaims, p.name, "sub is not a string")
		}
	}
	if v, present := claims["azp"]; present {
		if id.Presenter, ok = v.(string); !ok {
			return nil, time.Time{}, fail(ReasonBadClaims, p.name, "azp is not a string")
		}
	}
	switch aud := claims["aud"].(type) {
	case nil:
	case string:
		id.Audiences = []string{aud}
	case []any:
		for _, x := range aud {
			s, ok := x.(string)
			if !ok {
				return nil, time.Time{}, fail(ReasonBadClaims, p.name, "aud has a non-string element")
			}
			id.Audiences = append(id.Audiences, s)
		}
	default:
		return nil, time.Time{}, fail(ReasonBadClaims, p.name, "aud is neither a string nor a list")
	}
	if p.audiences != nil {
		match := false
		for _, aud := range id.Audiences {
			match = match || p.audiences[aud]
		}
		if !match {
			return nil, time.Time{}, fail(ReasonBadAudience, p.name, "aud %q matches none of the configured audiences", clip(strings.Join(id.Audiences, ",")))
		}
	}
	exp, hasExp, err := numericDate(claims, "exp")
	if err != nil {
		return nil, time.Time{}, fail(ReasonBadClaims, p.name, "%v", err)
	}
	if hasExp && !now.Before(exp.Add(p.skew)) {
		return nil, time.Time{}, fail(ReasonExpired, p.name, "expired at %s", exp.UTC().Format(time.RFC3339))
	}
	nbf, hasNbf, err := numericDate(claims, "nbf")
	if err != nil {
		return nil, time.Time{}, fail(ReasonBadClaims, p.name, "%v", err)
	}
	if hasNbf && now.Add(p.skew).Before(nbf) {
		return nil, time.Time{}, fail(ReasonNotYetValid, p.name, "not valid before %s", nbf.UTC().Format(time.RFC3339))
	}
	iat, hasIat, err := numericDate(claims, "iat")
	if err != nil {
		return nil, time.Time{}, fail(ReasonBadClaims, p.name, "%v", err)
	}
	if hasIat && now.Add(p.skew).Before(iat) {
		return nil, time.Time{}, fail(ReasonIssuedInFuture, p.name, "issued at %s, in the future", iat.UTC().Format(time.RFC3339))
	}
	id.RequestPrincipal = id.Issuer + "/" + id.Subject
	until := now.Add(maxCacheTTL)
	if hasExp && exp.Before(until) {
		until = exp
	}
	return id, until, nil
}

// numericDate reads a NumericDate claim (RFC 7519 §2).
func numericDate(claims map[string]any, name string) (time.Time, bool, error) {
	v, ok := claims[name]
	if !ok {
		return time.Time{}, false, nil
	}
	f, ok := v.(float64)
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e11 {
		return time.Time{}, false, fmt.Errorf("%s is not a NumericDate", name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// claimString renders a claim (dotted path) for a request header:
// strings as is, numbers and booleans in JSON, lists of those joined
// with ",". Objects and values with control characters are skipped.
func claimString(claims map[string]any, path []string) (string, bool) {
	var v any = claims
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		if v, ok = m[k]; !ok {
			return "", false
		}
	}
	var s string
	switch x := v.(type) {
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			p, ok := scalar(e)
			if !ok {
				return "", false
			}
			parts = append(parts, p)
		}
		s = strings.Join(parts, ",")
	default:
		var ok bool
		if s, ok = scalar(v); !ok {
			return "", false
		}
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' && s[i] != '\t' || s[i] == 0x7f {
			return "", false
		}
	}
	return s, true
}

func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	}
	return "", false
}

// clip shortens attacker-controlled text put into log reasons.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// LogAttrs returns the log fields for a refused token.
func LogAttrs(err error) []slog.Attr {
	var e *Error
	if !errors.As(err, &e) {
		return nil
	}
	return []slog.Attr{
		slog.String(authn.LogFieldReason, e.Reason.String()),
		slog.String(authn.LogFieldProvider, e.Provider),
		slog.String("detail", e.Detail),
	}
}
