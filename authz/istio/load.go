package istio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ztgate/ztgate/configs"
)

// DryRunAnnotation marks an AuthorizationPolicy as dry-run, as in Istio.
const DryRunAnnotation = "istio.io/dry-run"

// MaxFileSize bounds one policies.d file.
const MaxFileSize = 8 << 20

// Loaded is one policy read from an Istio document.
type Loaded struct {
	File   string         // the file it came from
	Key    string         // where in the file: "AuthorizationPolicy ns/name (document 2): spec"
	Policy configs.Policy // the translated policy
}

// LoadDir reads every .yaml/.yml file in dir, in name order, and
// translates its AuthorizationPolicy documents. providers are the known
// custom provider names (for CUSTOM's provider.name). authnMerged says
// MergeAuthn already took the RequestAuthentication documents (else they
// are an error, never silently ignored). Every problem is returned,
// joined, each naming file, document and key.
func LoadDir(dir string, providers []string, authnMerged bool) ([]Loaded, error) {
	files, err := dirFiles(dir)
	if err != nil {
		return nil, err
	}
	var out []Loaded
	var errs []error
	for _, path := range files {
		data, err := readLimited(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ps, err := parse(path, data, providers, authnMerged)
		out = append(out, ps...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

func dirFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, &configs.Error{File: dir, Msg: fmt.Sprintf("cannot read policies directory: %v", err)}
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if e.Type().IsRegular() && (strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) && !strings.HasPrefix(n, ".") {
			names = append(names, filepath.Join(dir, n))
		}
	}
	sort.Strings(names)
	return names, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &configs.Error{File: path, Msg: fmt.Sprintf("cannot read: %v", err)}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, &configs.Error{File: path, Msg: fmt.Sprintf("cannot read: %v", err)}
	}
	if len(data) > MaxFileSize {
		return nil, &configs.Error{File: path, Msg: fmt.Sprintf("larger than %d MiB", MaxFileSize>>20)}
	}
	return data, nil
}

// The Istio document shapes, strict: an unknown field is an error.
type header struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
}

type document struct {
	APIVersion string    `yaml:"apiVersion"`
	Kind       string    `yaml:"kind"`
	Metadata   metadata  `yaml:"metadata"`
	Spec       apSpec    `yaml:"spec"`
	Status     yaml.Node `yaml:"status"` // written by the cluster; ignored
}

type metadata struct {
	Name              string            `yaml:"name"`
	Namespace         string            `yaml:"namespace"`
	Labels            map[string]string `yaml:"labels"`
	Annotations       map[string]string `yaml:"annotations"`
	UID               string            `yaml:"uid"`
	ResourceVersion   string            `yaml:"resourceVersion"`
	Generation        int64             `yaml:"generation"`
	CreationTimestamp string            `yaml:"creationTimestamp"`
}

type apSpec struct {
	Selector   *selector `yaml:"selector"`
	TargetRef  yaml.Node `yaml:"targetRef"`
	TargetRefs yaml.Node `yaml:"targetRefs"`
	Action     string    `yaml:"action"`
	Provider   *provider `yaml:"provider"`
	Rules      *[]apRule `yaml:"rules"`
}

type selector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type provider struct {
	Name string `yaml:"name"`
}

type apRule struct {
	From []struct {
		Source source `yaml:"source"`
	} `yaml:"from"`
	To []struct {
		Operation operation `yaml:"operation"`
	} `yaml:"to"`
	When []condition `yaml:"when"`
}

type source struct {
	Principals           []string `yaml:"principals"`
	NotPrincipals        []string `yaml:"notPrincipals"`
	RequestPrincipals    []string `yaml:"requestPrincipals"`
	NotRequestPrincipals []string `yaml:"notRequestPrincipals"`
	Namespaces           []string `yaml:"namespaces"`
	NotNamespaces        []string `yaml:"notNamespaces"`
	ServiceAccounts      []string `yaml:"serviceAccounts"`
	NotServiceAccounts   []string `yaml:"notServiceAccounts"`
	TrustDomains         []string `yaml:"trustDomains"`
	NotTrustDomains      []string `yaml:"notTrustDomains"`
	IPBlocks             []string `yaml:"ipBlocks"`
	NotIPBlocks          []string `yaml:"notIpBlocks"`
	RemoteIPBlocks       []string `yaml:"remoteIpBlocks"`
	NotRemoteIPBlocks    []string `yaml:"notRemoteIpBlocks"`
}

type operation struct {
	Hosts      []string `yaml:"hosts"`
	NotHosts   []string `yaml:"notHosts"`
	Ports      []string `yaml:"ports"`
	NotPorts   []string `yaml:"notPorts"`
	Methods    []string `yaml:"methods"`
	NotMethods []string `yaml:"notMethods"`
	Paths      []string `yaml:"paths"`
	NotPaths   []string `yaml:"notPaths"`
}

type condition struct {
	Key       string   `yaml:"key"`
	Values    []string `yaml:"values"`
	NotValues []string `yaml:"notValues"`
}

// Parse translates the AuthorizationPolicy documents in data (one file,
// "---" separated); other kinds are errors. It never panics on hostile
// input.
func Parse(file string, data []byte, providers []string) ([]Loaded, error) {
	return parse(file, data, providers, false)
}

// forEachDocument decodes each non-empty document's node and header.
func forEachDocument(data []byte, fn func(node *yaml.Node, h header, err error)) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var node yaml.Node
		if err := dec.Decode(&node); err != nil {
			if !errors.Is(err, io.EOF) {
				fn(nil, header{}, fmt.Errorf("not valid YAML: %v", err))
			}
			return
		}
		if len(node.Content) == 0 || node.Content[0].Kind == yaml.ScalarNode && node.Content[0].Tag == "!!null" {
			fn(nil, header{}, errEmpty)
			continue
		}
		var h header
		if err := node.Decode(&h); err != nil {
			fn(&node, h, fmt.Errorf("not an Istio resource: %v", err))
			continue
		}
		fn(&node, h, nil)
	}
}

var errEmpty = errors.New("empty document")

func parse(file string, data []byte, providers []string, authnMerged bool) (out []Loaded, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, &configs.Error{File: file, Msg: fmt.Sprintf("cannot decode: %v", r)}
		}
	}()
	var errs []error
	fail := func(key, format string, args ...any) {
		errs = append(errs, &configs.Error{File: file, Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	n := 0
	forEachDocument(data, func(node *yaml.Node, h header, derr error) {
		n++
		where := fmt.Sprintf("document %d", n)
		switch {
		case derr == errEmpty:
			return
		case derr != nil:
			fail(where, "%v", derr)
			return
		}
		switch h.APIVersion {
		case "security.istio.io/v1", "security.istio.io/v1beta1":
		default:
			fail(where+".apiVersion", "%q is not supported (use security.istio.io/v1 or security.istio.io/v1beta1)", h.APIVersion)
			return
		}
		switch h.Kind {
		case "AuthorizationPolicy":
		case "RequestAuthentication":
			if !authnMerged {
				fail(where+".kind", "RequestAuthentication is not loaded by this build (it must be merged into authn at load; configure authn.jwt in the main config instead)")
			}
			return
		case "PeerAuthentication":
			if !authnMerged {
				fail(where+".kind", "PeerAuthentication is not loaded by this build (it must be merged into the listeners at load; set listeners[].peer_authentication in the main config instead)")
			}
			return
		default:
			fail(where+".kind", "%q is not supported (policies_dir holds AuthorizationPolicy, RequestAuthentication and PeerAuthentication documents)", h.Kind)
			return
		}
		var doc document
		if err := strictDecode(node, &doc); err != nil {
			fail(where, "%v", err)
			return
		}
		if doc.Metadata.Name == "" {
			fail(where+".metadata.name", "is required")
			return
		}
		where = fmt.Sprintf("AuthorizationPolicy %s (document %d)", qualified(doc.Metadata), n)
		p, perrs := translate(file, where, &doc, providers)
		errs = append(errs, perrs...)
		if len(perrs) == 0 {
			out = append(out, Loaded{File: file, Key: where + ": spec", Policy: p})
		}
	})
	return out, errors.Join(errs...)
}

func qualified(m metadata) string {
	if m.Namespace == "" {
		return m.Name
	}
	return m.Namespace + "/" + m.Name
}

func strictDecode(node *yaml.Node, v any) error {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(node); err != nil {
		return err
	}
	dec := yaml.NewDecoder(&buf)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return nil
}

func translate(file, where string, d *document, providers []string) (configs.Policy, []error) {
	var errs []error
	fail := func(key, format string, args ...any) {
		errs = append(errs, &configs.Error{File: file, Key: where + ": " + key, Msg: fmt.Sprintf(format, args...)})
	}
	s := &d.Spec
	if !s.TargetRef.IsZero() || !s.TargetRefs.IsZero() {
		fail("spec.targetRef", "is not supported (attach with selector.matchLabels and routes[].labels)")
	}
	p := configs.Policy{
		Name:   d.Metadata.Name,
		Action: s.Action,
		Origin: fmt.Sprintf("%s (%s)", file, where),
	}
	if p.Action == "" {
		p.Action = configs.ActionAllow
	}
	if v, ok := d.Metadata.Annotations[DryRunAnnotation]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fail("metadata.annotations."+DryRunAnnotation, "%q is not true or false", v)
		}
		p.DryRun = b
	}
	if s.Selector != nil {
		if len(s.Selector.MatchLabels) == 0 {
			fail("spec.selector.matchLabels", "is empty (remove selector to apply the policy everywhere)")
		}
		// Route labels pass through viper, which lower-cases keys.
		ml := map[string]string{}
		for k, v := range s.Selector.MatchLabels {
			ml[strings.ToLower(k)] = v
		}
		p.Selector = &configs.Selector{MatchLabels: ml}
	}
	if s.Provider != nil {
		if p.Action != configs.ActionCustom {
			fail("spec.provider", "is only valid with action CUSTOM")
		}
		p.Provider = s.Provider.Name
		found := false
		for _, n := range providers {
			found = found || n == p.Provider
		}
		if !found {
			fail("spec.provider.name", "%q is not defined in authz.custom_providers (known: %s)", p.Provider, strings.Join(providers, ", "))
		}
	} else if p.Action == configs.ActionCustom {
		fail("spec.provider", "is required for action CUSTOM (provider: {name: <authz.custom_providers name>})")
	}
	if s.Rules != nil {
		for _, r := range *s.Rules {
			var cr configs.Rule
			for _, f := range r.From {
				cr.From = append(cr.From, configs.From{Source: configs.Source(f.Source)})
			}
			for _, t := range r.To {
				cr.To = append(cr.To, configs.To{Operation: configs.Operation(t.Operation)})
			}
			for _, w := range r.When {
				cr.When = append(cr.When, configs.Condition(w))
			}
			p.Rules = append(p.Rules, cr)
		}
	}
	switch p.Action {
	case configs.ActionAllow, configs.ActionDeny, configs.ActionAudit, configs.ActionCustom:
	default:
		fail("spec.action", "%q is not valid (use one of: ALLOW, DENY, AUDIT, CUSTOM)", p.Action)
	}
	return p, errs
}
