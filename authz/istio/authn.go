package istio

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ztgate/ztgate/configs"
)

type raDocument struct {
	APIVersion string    `yaml:"apiVersion"`
	Kind       string    `yaml:"kind"`
	Metadata   metadata  `yaml:"metadata"`
	Spec       raSpec    `yaml:"spec"`
	Status     yaml.Node `yaml:"status"`
}

type raSpec struct {
	Selector   *selector `yaml:"selector"`
	TargetRef  yaml.Node `yaml:"targetRef"`
	TargetRefs yaml.Node `yaml:"targetRefs"`
	JWTRules   []jwtRule `yaml:"jwtRules"`
}

type paDocument struct {
	APIVersion string    `yaml:"apiVersion"`
	Kind       string    `yaml:"kind"`
	Metadata   metadata  `yaml:"metadata"`
	Spec       paSpec    `yaml:"spec"`
	Status     yaml.Node `yaml:"status"`
}

type paSpec struct {
	Selector      *selector              `yaml:"selector"`
	TargetRef     yaml.Node              `yaml:"targetRef"`
	TargetRefs    yaml.Node              `yaml:"targetRefs"`
	MTLS          *struct{ Mode string } `yaml:"mtls"`
	PortLevelMTLS yaml.Node              `yaml:"portLevelMtls"`
}

type jwtRule struct {
	Issuer      string   `yaml:"issuer"`
	Audiences   []string `yaml:"audiences"`
	JWKSURI     string   `yaml:"jwksUri"`
	JWKS        string   `yaml:"jwks"`
	FromHeaders []struct {
		Name   string `yaml:"name"`
		Prefix string `yaml:"prefix"`
	} `yaml:"fromHeaders"`
	FromParams            []string  `yaml:"fromParams"`
	FromCookies           []string  `yaml:"fromCookies"`
	OutputPayloadToHeader string    `yaml:"outputPayloadToHeader"`
	ForwardOriginalToken  bool      `yaml:"forwardOriginalToken"`
	Timeout               yaml.Node `yaml:"timeout"`
	OutputClaimToHeaders  []struct {
		Header string `yaml:"header"`
		Claim  string `yaml:"claim"`
	} `yaml:"outputClaimToHeaders"`
}

// MergeAuthn reads the RequestAuthentication and PeerAuthentication
// documents of cfg.Authz.PoliciesDir into cfg, validates the whole
// config again, and marks cfg so the policy loader skips them.
//
// RequestAuthentication → authn.jwt providers (defaults applied); a
// selector becomes the provider's routes (the routes whose labels
// include matchLabels).
//
// PeerAuthentication → with a selector, routes[].peer_authentication of
// the selected routes; without one, listeners[].peer_authentication.mode
// of every TLS listener still at DISABLE. A conflict with a mode the main
// file set is an error; mtls.mode UNSET (or no mtls) changes nothing.
//
// Call it after configs.Load and before compiling authn and authz; on
// error, discard cfg (it may be partly changed).
func MergeAuthn(cfg *configs.Config) error {
	dir := cfg.Authz.PoliciesDir
	if dir == "" || cfg.Authz.IstioAuthnMerged {
		return nil
	}
	files, err := dirFiles(dir)
	if err != nil {
		return err
	}
	var errs []error
	var added []configs.JWTProvider
	for _, path := range files {
		data, err := readLimited(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ps, err := parseRequestAuthn(path, data, cfg)
		added = append(added, ps...)
		if err != nil {
			errs = append(errs, err)
		}
		if err := applyPeerAuthn(path, data, cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	cfg.Authn.JWT = append(cfg.Authn.JWT, added...)
	cfg.Authz.IstioAuthnMerged = true
	return cfg.Validate()
}

func parseRequestAuthn(file string, data []byte, cfg *configs.Config) (out []configs.JWTProvider, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, &configs.Error{File: file, Msg: fmt.Sprintf("cannot decode: %v", r)}
		}
	}()
	var errs []error
	n := 0
	forEachDocument(data, func(node *yaml.Node, h header, derr error) {
		n++
		if derr != nil || h.Kind != "RequestAuthentication" {
			return // reported by the policy loader
		}
		var doc raDocument
		if err := strictDecode(node, &doc); err != nil {
			errs = append(errs, &configs.Error{File: file, Key: fmt.Sprintf("document %d", n), Msg: err.Error()})
			return
		}
		where := fmt.Sprintf("RequestAuthentication %s (document %d): ", qualified(doc.Metadata), n)
		fail := func(key, format string, args ...any) {
			errs = append(errs, &configs.Error{File: file, Key: where + key, Msg: fmt.Sprintf(format, args...)})
		}
		if doc.Metadata.Name == "" {
			fail("metadata.name", "is required")
			return
		}
		if !doc.Spec.TargetRef.IsZero() || !doc.Spec.TargetRefs.IsZero() {
			fail("spec.targetRef", "is not supported (attach with selector.matchLabels and routes[].labels)")
		}
		var routes []string
		if sel := doc.Spec.Selector; sel != nil {
			for _, r := range cfg.Routes {
				ok := true
				for k, v := range sel.MatchLabels {
					ok = ok && r.Labels[strings.ToLower(k)] == v
				}
				if ok {
					routes = append(routes, r.Name)
				}
			}
			if len(sel.MatchLabels) == 0 || len(routes) == 0 {
				fail("spec.selector.matchLabels", "selects no route (give routes matching labels:, or remove selector to apply everywhere)")
				return
			}
			sort.Strings(routes)
		}
		for i, r := range doc.Spec.JWTRules {
			key := fmt.Sprintf("spec.jwtRules[%d]", i)
			if r.OutputPayloadToHeader != "" {
				fail(key+".outputPayloadToHeader", "is not supported (use outputClaimToHeaders)")
			}
			if !r.Timeout.IsZero() {
				fail(key+".timeout", "is not supported (ztgate fetches keys in the background; see authn.jwt[].jwks_refresh)")
			}
			name := doc.Metadata.Name
			if len(doc.Spec.JWTRules) > 1 {
				name = fmt.Sprintf("%s[%d]", name, i)
			}
			p := configs.JWTProvider{
				Name: name, Issuer: r.Issuer, Audiences: r.Audiences, JWKSURI: r.JWKSURI, JWKS: r.JWKS,
				FromParams: r.FromParams, FromCookies: r.FromCookies, ForwardOriginalToken: r.ForwardOriginalToken, Routes: routes,
			}
			for _, h := range r.FromHeaders {
				p.FromHeaders = append(p.FromHeaders, configs.JWTHeader{Name: h.Name, Prefix: h.Prefix})
			}
			for _, o := range r.OutputClaimToHeaders {
				p.OutputClaimToHeaders = append(p.OutputClaimToHeaders, configs.ClaimToHeader{Header: o.Header, Claim: o.Claim})
			}
			jwtDefaults(&p)
			out = append(out, p)
		}
	})
	return out, errors.Join(errs...)
}

// jwtDefaults applies authn.jwt[]'s documented defaults (configs'
// setDefaults ran before these providers existed).
func jwtDefaults(p *configs.JWTProvider) {
	if len(p.Algorithms) == 0 {
		p.Algorithms = append([]string(nil), configs.JWTAlgorithms...)
	}
	p.ClockSkew = configs.DefaultJWTClockSkew
	p.MaxTokenBytes = configs.DefaultMaxTokenBytes
	if p.JWKSURI != "" {
		p.JWKSRefresh = configs.DefaultJWKSRefresh
		p.JWKSRefetchMinInterval = configs.DefaultJWKSRefetchMinInterval
	}
	if len(p.FromHeaders) == 0 && len(p.FromParams) == 0 && len(p.FromCookies) == 0 {
		p.FromHeaders = []configs.JWTHeader{{Name: "Authorization", Prefix: "Bearer "}}
		p.FromParams = []string{"access_token"}
	}
}

func applyPeerAuthn(file string, data []byte, cfg *configs.Config) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &configs.Error{File: file, Msg: fmt.Sprintf("cannot decode: %v", r)}
		}
	}()
	var errs []error
	n := 0
	forEachDocument(data, func(node *yaml.Node, h header, derr error) {
		n++
		if derr != nil || h.Kind != "PeerAuthentication" {
			return
		}
		var doc paDocument
		if err := strictDecode(node, &doc); err != nil {
			errs = append(errs, &configs.Error{File: file, Key: fmt.Sprintf("document %d", n), Msg: err.Error()})
			return
		}
		where := fmt.Sprintf("PeerAuthentication %s (document %d): ", qualified(doc.Metadata), n)
		fail := func(key, format string, args ...any) {
			errs = append(errs, &configs.Error{File: file, Key: where + key, Msg: fmt.Sprintf(format, args...)})
		}
		if doc.Metadata.Name == "" {
			fail("metadata.name", "is required")
			return
		}
		if !doc.Spec.TargetRef.IsZero() || !doc.Spec.TargetRefs.IsZero() {
			fail("spec.targetRef", "is not supported (attach with selector.matchLabels and routes[].labels)")
			return
		}
		if !doc.Spec.PortLevelMTLS.IsZero() {
			fail("spec.portLevelMtls", "is not supported (set listeners[].peer_authentication per listener instead)")
			return
		}
		mode := ""
		if doc.Spec.MTLS != nil {
			mode = strings.ToUpper(doc.Spec.MTLS.Mode)
		}
		switch mode {
		case "", "UNSET":
			return
		case configs.PeerStrict, configs.PeerPermissive, configs.PeerDisable:
		default:
			fail("spec.mtls.mode", "%q is not valid (use STRICT, PERMISSIVE, DISABLE or UNSET)", doc.Spec.MTLS.Mode)
			return
		}
		if sel := doc.Spec.Selector; sel != nil {
			matched := 0
			for i := range cfg.Routes {
				r := &cfg.Routes[i]
				ok := len(sel.MatchLabels) > 0
				for k, v := range sel.MatchLabels {
					ok = ok && r.Labels[strings.ToLower(k)] == v
				}
				if !ok {
					continue
				}
				matched++
				if r.PeerAuthentication != "" && r.PeerAuthentication != mode {
					fail("spec.mtls.mode", "%s conflicts with routes[%d].peer_authentication %s in the main file (keep one)", mode, i, r.PeerAuthentication)
					continue
				}
				r.PeerAuthentication = mode
			}
			if matched == 0 {
				fail("spec.selector.matchLabels", "selects no route (give routes matching labels:, or remove selector to apply to every listener)")
			}
			return
		}
		for i := range cfg.Listeners {
			l := &cfg.Listeners[i]
			if l.TLS == nil {
				continue // a redirect listener has no handshake to change
			}
			switch l.PeerAuthentication.Mode {
			case mode:
			case configs.PeerDisable, "":
				l.PeerAuthentication.Mode = mode
			default:
				fail("spec.mtls.mode", "%s conflicts with listeners[%d].peer_authentication.mode %s in the main file (keep one)", mode, i, l.PeerAuthentication.Mode)
			}
		}
	})
	return errors.Join(errs...)
}
