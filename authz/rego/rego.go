// Package rego decides CUSTOM policies with the embedded OPA. A query is
// prepared once per config (on every reload), evaluated with a deadline
// per request, and any error, timeout or malformed result denies.
//
// The input document is shaped like opa-envoy-plugin's, so policies
// written for Envoy's ext_authz run unchanged (see Input). It lives
// outside package authz because OPA imports net/http.
package rego

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/ztgate/ztgate/authz"
	"github.com/ztgate/ztgate/configs"
)

// MaxModuleSize bounds one .rego or data file.
const MaxModuleSize = 4 << 20

// ErrUndefined is returned when the query has no value for the input.
var ErrUndefined = errors.New("query result is undefined")

// Policy is a prepared Rego query. Immutable; safe for concurrent use.
type Policy struct {
	name    string
	query   string
	timeout time.Duration
	pq      rego.PreparedEvalQuery
}

var _ authz.CustomProvider = (*Policy)(nil)

// Compiler is the authz.RegoCompiler that prepares policies with OPA.
// Pass it as authz.Deps.Rego.
func Compiler(name string, r *configs.Rego, defaultTimeout time.Duration) (authz.CustomProvider, error) {
	return New(name, r, defaultTimeout)
}

var _ authz.RegoCompiler = Compiler

// New loads the modules, bundle and data of r and prepares its query.
func New(name string, r *configs.Rego, defaultTimeout time.Duration) (*Policy, error) {
	opts := []func(*rego.Rego){rego.Query(r.Query)}
	for _, f := range r.Files {
		src, err := readLimited(f)
		if err != nil {
			return nil, err
		}
		opts = append(opts, rego.Module(f, string(src)))
	}
	if r.Bundle != "" {
		opts = append(opts, rego.LoadBundle(r.Bundle))
	}
	if r.Data != "" {
		raw, err := readLimited(r.Data)
		if err != nil {
			return nil, err
		}
		var data map[string]any
		if err := json.Unmarshal(raw, &data); err != nil {
			return nil, fmt.Errorf("data %s: not a JSON object: %v", r.Data, err)
		}
		opts = append(opts, rego.Store(inmem.NewFromObject(data)))
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	if timeout <= 0 {
		timeout = 100 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pq, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %v", r.Query, err)
	}
	return &Policy{name: name, query: r.Query, timeout: timeout, pq: pq}, nil
}

// NewFromModules prepares query over in-memory modules (file name →
// source); for tests and tools.
func NewFromModules(name, query string, modules map[string]string, timeout time.Duration) (*Policy, error) {
	opts := []func(*rego.Rego){rego.Query(query)}
	names := make([]string, 0, len(modules))
	for n := range modules {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		opts = append(opts, rego.Module(n, modules[n]))
	}
	pq, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %v", query, err)
	}
	return &Policy{name: name, query: query, timeout: timeout, pq: pq}, nil
}

func readLimited(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if st.Size() > MaxModuleSize {
		return nil, fmt.Errorf("%s: larger than %d MiB", path, MaxModuleSize>>20)
	}
	return os.ReadFile(filepath.Clean(path))
}

// Eval evaluates the query on input with the policy's deadline and
// returns its value. Undefined is ErrUndefined.
func (p *Policy) Eval(ctx context.Context, input any) (any, metrics.Metrics, error) {
	return p.eval(ctx, rego.EvalInput(input))
}

func (p *Policy) eval(ctx context.Context, input rego.EvalOption) (any, metrics.Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	m := metrics.New()
	rs, err := p.pq.Eval(ctx, input, rego.EvalMetrics(m))
	if err != nil {
		if ctx.Err() != nil {
			return nil, m, fmt.Errorf("evaluation exceeded its %s deadline: %w", p.timeout, ctx.Err())
		}
		return nil, m, err
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, m, ErrUndefined
	}
	if len(rs) > 1 {
		return nil, m, fmt.Errorf("query has %d results, want one", len(rs))
	}
	return rs[0].Expressions[0].Value, m, nil
}

// Check implements authz.CustomProvider: it builds the input from a,
// evaluates, and interprets the result as a bool or an object
// {allowed, headers, response_headers, http_status, body}. Every error
// is returned, so authz denies.
func (p *Policy) Check(ctx context.Context, a *authz.Attributes) (authz.CustomResult, error) {
	rec := &authz.OPARecord{DecisionID: newID(), Path: strings.ReplaceAll(strings.TrimPrefix(p.query, "data."), ".", "/"), Input: logInput{a: a}}
	iv, err := inputValue(a)
	if err != nil {
		rec.Error = err.Error()
		return authz.CustomResult{OPA: rec}, fmt.Errorf("build input: %v", err)
	}
	v, m, err := p.eval(ctx, rego.EvalParsedInput(iv))
	if m != nil {
		rec.Metrics = m.All()
	}
	if err != nil {
		rec.Error = err.Error()
		return authz.CustomResult{OPA: rec}, err
	}
	rec.Result = v
	res, err := Interpret(v)
	res.OPA = rec
	if err != nil {
		rec.Error = err.Error()
		return res, err
	}
	return res, nil
}

// Interpret turns a query value into a result, as opa-envoy-plugin does.
func Interpret(v any) (authz.CustomResult, error) {
	switch x := v.(type) {
	case bool:
		return authz.CustomResult{Allowed: x, Reason: fmt.Sprintf("rego result %v", x)}, nil
	case map[string]any:
		var res authz.CustomResult
		allowed, ok := x["allowed"].(bool)
		if !ok {
			return res, fmt.Errorf("result object needs a boolean \"allowed\" (got %T)", x["allowed"])
		}
		res.Allowed = allowed
		res.Reason = fmt.Sprintf("rego result allowed=%v", allowed)
		var err error
		if res.UpstreamHeaders, err = headers(x["headers"], "headers"); err != nil {
			return res, err
		}
		if res.ResponseHeaders, err = headers(x["response_headers"], "response_headers"); err != nil {
			return res, err
		}
		if s, ok := x["http_status"]; ok {
			n, ok := s.(json.Number)
			code, err := n.Int64()
			if !ok || err != nil || code < 200 || code > 599 {
				return res, fmt.Errorf("http_status %v is not an HTTP status", s)
			}
			res.Status = int(code)
		}
		if b, ok := x["body"]; ok {
			s, ok := b.(string)
			if !ok {
				return res, fmt.Errorf("body must be a string (got %T)", b)
			}
			res.Body = s
		}
		return res, nil
	}
	return authz.CustomResult{}, fmt.Errorf("result is %T, want a bool or an object with \"allowed\"", v)
}

func headers(v any, key string) ([]authz.Header, error) {
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s must be an object of header names to values (got %T)", key, v)
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	var out []authz.Header
	for _, k := range names {
		switch x := m[k].(type) {
		case string:
			out = append(out, authz.Header{Name: k, Value: x})
		case []any:
			for _, e := range x {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("%s[%q] must hold strings", key, k)
				}
				out = append(out, authz.Header{Name: k, Value: s})
			}
		default:
			return nil, fmt.Errorf("%s[%q] must be a string or a list of strings", key, k)
		}
	}
	return out, nil
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
