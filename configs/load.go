package configs

import (
	"bytes"
	_ "embed"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// EnvPrefix prefixes environment overrides: ZTGATE_ADMIN_ADDRESS sets
// admin.address. Only keys outside lists can be overridden.
const EnvPrefix = "ZTGATE"

// Embedded is the name used as File for the built-in default config.
const Embedded = "<embedded dev.yaml>"

//go:embed dev.yaml
var devYAML []byte

// DevYAML returns the embedded default config (configs/dev.yaml).
func DevYAML() []byte { return append([]byte(nil), devYAML...) }

// MaxFileSize bounds the config file read, so a wrong path (a log, a
// device) cannot make the loader allocate without limit.
const MaxFileSize = 64 << 20

// Load reads, decodes strictly, defaults and validates the config at path.
// Every problem is returned at once, each naming path and key.
func Load(path string) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, os.Environ())
}

// LoadEmbedded loads the built-in default config.
func LoadEmbedded() (*Config, error) {
	return Parse(Embedded, devYAML, os.Environ())
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read: %v", unwrapPathError(err))}
	}
	defer f.Close()
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read: %v", err)}
	}
	if n > MaxFileSize {
		return nil, &Error{File: path, Msg: fmt.Sprintf("larger than %d MiB; is this the right file?", MaxFileSize>>20)}
	}
	return buf.Bytes(), nil
}

// Parse decodes YAML data as if read from file, applies environment
// overrides from env (KEY=VALUE strings), defaults and validation.
func Parse(file string, data []byte, env []string) (cfg *Config, err error) {
	defer func() {
		// viper and mapstructure are not written for hostile input; a
		// panic in them must be a config error, not a crash.
		if r := recover(); r != nil {
			cfg, err = nil, &Error{File: file, Msg: fmt.Sprintf("cannot decode: %v", r)}
		}
	}()
	// "::" as key delimiter keeps dotted map keys (label names such as
	// app.kubernetes.io/name) intact.
	vp := viper.NewWithOptions(viper.KeyDelimiter("::"))
	vp.SetConfigType("yaml")
	if err := vp.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, &Error{File: file, Msg: fmt.Sprintf("not valid YAML: %v", cleanYAMLError(err))}
	}
	v := newValidator(file)
	checkKeys(v, "", reflect.TypeFor[Config](), vp.AllSettings())
	applyEnv(vp, v, env)
	if !v.ok() {
		return nil, v.err()
	}
	cfg = &Config{}
	if err := vp.UnmarshalExact(cfg, func(dc *mapstructure.DecoderConfig) {
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		)
		dc.WeaklyTypedInput = true
	}); err != nil {
		return nil, &Error{File: file, Msg: cleanDecodeError(err)}
	}
	cfg.File = file
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func cleanYAMLError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "While parsing config: ")
	return s
}

// cleanDecodeError turns mapstructure's "decoding failed due to the
// following error(s):\n\n'a.b' expected ..." into one line per problem.
func cleanDecodeError(err error) string {
	s := err.Error()
	if i := strings.Index(s, "\n\n"); i >= 0 {
		s = s[i+2:]
	}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(strings.TrimSpace(l), "* ")
	}
	return "wrong type: " + strings.Join(lines, "; ")
}

// checkKeys walks the decoded YAML against the Go type and records every
// key the type does not have, with the closest known key as a hint.
// (UnmarshalExact would also refuse them, but names only the first list
// level and gives no suggestion.)
func checkKeys(v *validator, path string, t reflect.Type, raw any) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if raw == nil {
		return
	}
	typeErr := func(msg string) {
		*v.errs = append(*v.errs, &Error{File: v.src, Key: path, Msg: msg})
	}
	if t == reflect.TypeFor[time.Duration]() {
		switch x := raw.(type) {
		case string:
			if _, err := time.ParseDuration(x); err != nil {
				typeErr(fmt.Sprintf("%q is not a duration (e.g. 5s, 250ms, 1m30s)", x))
			}
		case int, int64, float64:
			if x != 0 {
				typeErr(fmt.Sprintf("%v needs a unit (e.g. %vs or %vms)", x, x, x))
			}
		default:
			typeErr(fmt.Sprintf("must be a duration such as 5s, not %s", yamlKind(raw)))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := raw.(map[string]any)
		if !ok {
			typeErr(fmt.Sprintf("must be a mapping (key: value), not %s", yamlKind(raw)))
			return
		}
		fields := structKeys(t)
		names := make([]string, 0, len(fields))
		for k := range fields {
			names = append(names, k)
		}
		sort.Strings(names)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, known := fields[k]
			if !known {
				msg := fmt.Sprintf("unknown key %q", k)
				if s := suggest(k, names); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				} else {
					msg += fmt.Sprintf(" (known keys here: %s)", strings.Join(names, ", "))
				}
				*v.errs = append(*v.errs, &Error{File: v.src, Key: path, Msg: msg})
				if path == "" {
					(*v.errs)[len(*v.errs)-1].(*Error).Key = k
					(*v.errs)[len(*v.errs)-1].(*Error).Msg = strings.Replace(msg, fmt.Sprintf("unknown key %q", k), "unknown top-level key", 1)
				}
				continue
			}
			checkKeys(v, joinKey(path, k), ft, m[k])
		}
	case reflect.Slice:
		items, ok := raw.([]any)
		if !ok {
			if _, isStr := raw.(string); isStr && t.Elem().Kind() == reflect.String {
				return // "a,b" is accepted for a list of strings
			}
			typeErr(fmt.Sprintf("must be a list, not %s", yamlKind(raw)))
			return
		}
		for i, it := range items {
			checkKeys(v, fmt.Sprintf("%s[%d]", path, i), t.Elem(), it)
		}
	case reflect.Map:
		m, ok := raw.(map[string]any)
		if !ok {
			typeErr(fmt.Sprintf("must be a mapping (key: value), not %s", yamlKind(raw)))
			return
		}
		for k, it := range m {
			checkKeys(v, joinKey(path, k), t.Elem(), it)
		}
	}
}

// yamlKind names the YAML kind of a decoded value for error messages.
func yamlKind(raw any) string {
	switch x := raw.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return fmt.Sprintf("the string %q", x)
	case bool:
		return fmt.Sprintf("the boolean %v", x)
	default:
		return fmt.Sprintf("the value %v", x)
	}
}

func joinKey(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// structKeys maps the mapstructure key of every field (lowercased, as
// viper reports keys) to its type, following squashed embedded structs.
func structKeys(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("mapstructure")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "squash") {
			for k, v := range structKeys(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[strings.ToLower(name)] = f.Type
	}
	return out
}

// applyEnv applies ZTGATE_* overrides to scalar keys outside lists:
// ZTGATE_ADMIN_ADDRESS=... sets admin.address. An override that names
// no key is an error, so a typo does not silently do nothing.
func applyEnv(vp *viper.Viper, v *validator, env []string) {
	leaves := map[string]string{} // ENV_NAME → viper key
	envLeaves(reflect.TypeFor[Config](), "", leaves)
	for _, kv := range env {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix+"_") {
			continue
		}
		key, known := leaves[name]
		if !known {
			// ZTGATE_CONFIG and friends belong to the command line.
			if name == EnvPrefix+"_CONFIG" {
				continue
			}
			v.addf("", "environment variable %s names no config key (e.g. %s_ADMIN_ADDRESS sets admin.address)", name, EnvPrefix)
			continue
		}
		vp.Set(key, val)
	}
}

func envLeaves(t reflect.Type, path string, out map[string]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.PkgPath() == "time" {
		if path != "" {
			out[EnvPrefix+"_"+strings.ToUpper(strings.ReplaceAll(path, "::", "_"))] = path
		}
		return
	}
	for k, ft := range structKeys(t) {
		switch ft.Kind() {
		case reflect.Slice, reflect.Map:
			if ft.Elem().Kind() == reflect.String {
				envLeaves(reflect.TypeFor[string](), joinEnv(path, k), out)
			}
			continue
		}
		envLeaves(ft, joinEnv(path, k), out)
	}
}

func joinEnv(path, k string) string {
	if path == "" {
		return k
	}
	return path + "::" + k
}
