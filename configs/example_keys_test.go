package configs

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// keyPaths lists every key of the config schema, lists written as "[]":
// "egress.listeners[].mode".
func keyPaths(t reflect.Type, path string, out *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Slice && derefKind(t.Elem()) == reflect.Struct:
		keyPaths(t.Elem(), path+"[]", out)
		return
	case t.Kind() == reflect.Struct && t != reflect.TypeFor[time.Duration]():
		if keys := structKeys(t); len(keys) > 0 {
			for k, ft := range keys {
				keyPaths(ft, joinKey(path, k), out)
			}
			return
		}
	}
	*out = append(*out, path)
}

func derefKind(t reflect.Type) reflect.Kind {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind()
}

// TestExampleDocumentsEveryKey keeps configs/ztgate.example.yaml the
// reference of every key: each key of the schema must appear in the
// example (set, or commented out) inside its top-level section. A new
// config key without an example line fails here.
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("ztgate.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Split the file into top-level sections; a commented-out section
	// header ("# identity:") starts one too.
	sections := map[string]string{}
	top := regexp.MustCompile(`^(?:# ?)?([a-z_]+):`)
	cur := ""
	for _, line := range strings.Split(string(data), "\n") {
		if m := top.FindStringSubmatch(line); m != nil && (line[0] != '#' || strings.TrimSpace(line[len(m[0]):]) == "") {
			cur = m[1]
		}
		if cur != "" {
			sections[cur] += line + "\n"
		}
	}
	var paths []string
	keyPaths(reflect.TypeFor[Config](), "", &paths)
	if len(paths) < 200 {
		t.Fatalf("only %d key paths found: the schema walk is broken", len(paths))
	}
	for _, p := range paths {
		section := strings.TrimSuffix(strings.Split(p, ".")[0], "[]")
		parts := strings.Split(p, ".")
		leaf := strings.TrimSuffix(parts[len(parts)-1], "[]")
		re := regexp.MustCompile(`(^|[\s{,\[#])` + regexp.QuoteMeta(leaf) + `:`)
		if !re.MatchString(sections[section]) {
			t.Errorf("configs/ztgate.example.yaml does not show %s: add it (set or commented out) with its default", p)
		}
	}
}
