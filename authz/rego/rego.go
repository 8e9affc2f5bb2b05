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
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
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
	path    string // the query as a decision-log path: envoy/authz/allow
	timeout time.Duration
	pq      rego.PreparedEvalQuery
	// input is the part of the input document the policy can read
	// (analyze); Check builds only that.
	input  *need
	jwtKey *jwtMemoKey
	// blocking: the policy calls a builtin that waits on I/O, so it is
	// evaluated under a context deadline rather than a polled one.
	blocking bool
	// pool runs evaluations on goroutines that keep their grown stacks
	// (nil for blocking policies, which may wait long on I/O).
	pool      *evalPool
	closeOnce sync.Once
}

// Close releases the policy's share of the evaluation goroutines;
// authz.Engine.Close calls it after a reload has drained. Check still
// works afterwards (on the caller's goroutine), so a late request is
// decided, not refused.
func (p *Policy) Close() {
	p.closeOnce.Do(func() {
		if p.pool != nil {
			releasePool(p.pool)
		}
	})
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
	return newPolicy(name, r.Query, timeout, pq)
}

func newPolicy(name, query string, timeout time.Duration, pq rego.PreparedEvalQuery) (*Policy, error) {
	body, err := ast.ParseBody(query)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %v", query, err)
	}
	an := analyze(pq.Modules(), body)
	p := &Policy{
		name: name, query: query, timeout: timeout, pq: pq,
		path:  strings.ReplaceAll(strings.TrimPrefix(query, "data."), ".", "/"),
		input: an.input, blocking: an.blocking,
		jwtKey: &jwtMemoKey{need: an.input.child("jwt").String()},
	}
	if !p.blocking {
		p.pool = acquirePool()
	}
	return p, nil
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
	return newPolicy(name, query, timeout, pq)
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

// Eval evaluates the query on input (any JSON-like Go value) with the
// policy's deadline and returns its value and OPA's metrics. Undefined
// is ErrUndefined. It is for tests and tools; the request path is Check.
func (p *Policy) Eval(ctx context.Context, input any) (v any, m metrics.Metrics, err error) {
	m = metrics.New()
	p.onWarmStack(func() {
		v, _, err = p.eval(ctx, rego.EvalInput(input), rego.EvalMetrics(m))
	})
	return v, m, err
}

// onWarmStack runs f, which evaluates, on a pool worker whose stack is
// already grown (pool.go), or on the caller's goroutine for policies
// that block on I/O and so must not hold a worker.
func (p *Policy) onWarmStack(f func()) {
	if p.pool != nil {
		p.pool.do(f)
		return
	}
	f()
}

// optNoMetrics: Check times the evaluation itself (one clock read it needs
// for the deadline anyway) instead of OPA's per-evaluation timer map.
var optNoMetrics = rego.EvalMetrics(metrics.NoOp())

// eval evaluates on the calling goroutine with the policy's deadline:
// polled by OPA (deadline), or a context deadline for policies that
// block on I/O. It returns the query's value and how long evaluation
// took.
func (p *Policy) eval(ctx context.Context, opts ...rego.EvalOption) (v any, took time.Duration, err error) {
	start := time.Now()
	opts = append(opts, rego.EvalVirtualCache(newVCache()))
	var dl *deadline
	if p.blocking {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	} else {
		dl = newDeadline(ctx, start, p.timeout)
		opts = append(opts, rego.EvalExternalCancel(dl))
	}
	rs, err := p.pq.Eval(ctx, opts...)
	took = time.Since(start)
	if err != nil {
		if dl != nil && dl.fired.Load() {
			if dl.err == context.DeadlineExceeded {
				return nil, took, fmt.Errorf("evaluation exceeded its %s deadline: %w", p.timeout, dl.err)
			}
			return nil, took, fmt.Errorf("evaluation stopped: %w", dl.err)
		}
		if ctx.Err() != nil {
			return nil, took, fmt.Errorf("evaluation exceeded its %s deadline: %w", p.timeout, ctx.Err())
		}
		return nil, took, err
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, took, ErrUndefined
	}
	if len(rs) > 1 {
		return nil, took, fmt.Errorf("query has %d results, want one", len(rs))
	}
	return rs[0].Expressions[0].Value, took, nil
}

// Check implements authz.CustomProvider: it builds the input from a,
// evaluates, and interprets the result as a bool or an object
// {allowed, headers, response_headers, http_status, body}. Every error
// is returned, so authz denies.
//
// The input holds only what the policy can read (analyze); the decision
// log's copy of it (decision_log.rego_input) is the whole document,
// built only when a record is written, as are the decision id and the
// metrics. Input and evaluation both run on a warm stack.
func (p *Policy) Check(ctx context.Context, a *authz.Attributes) (authz.CustomResult, error) {
	rec := &authz.OPARecord{Path: p.path, Input: logInput{a: a}}
	var (
		v         any
		took      time.Duration
		err, ierr error
	)
	p.onWarmStack(func() {
		var iv ast.Value
		if iv, ierr = inputValue(a, p.input, p.jwtKey); ierr == nil {
			v, took, err = p.eval(ctx, rego.EvalParsedInput(iv), optNoMetrics)
		}
	})
	if ierr != nil {
		rec.Error = ierr.Error()
		return authz.CustomResult{OPA: rec}, fmt.Errorf("build input: %v", ierr)
	}
	rec.EvalTime = took
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
		if x {
			return authz.CustomResult{Allowed: true, Reason: "rego result true"}, nil
		}
		return authz.CustomResult{Reason: "rego result false"}, nil
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
