package dnsguard

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps DESIGN.md's "must not know" true: the core package
// does not import crypto/tls (DoT comes in through Deps.DialTLS from
// package dot) and no dnsguard package imports the gateway. Transitive
// imports through miekg/dns and net/http are outside this rule.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}", "./...").CombinedOutput()
	if err != nil {
		t.Skipf("go list: %v %s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ": ")
		for _, imp := range strings.Fields(imports) {
			if imp == "crypto/tls" && !strings.HasSuffix(pkg, "/dnsguard/dot") {
				t.Errorf("%s imports crypto/tls; only dnsguard/dot may", pkg)
			}
			if strings.Contains(imp, "ztgate/ztgate/gateway") || strings.Contains(imp, "ztgate/ztgate/egress") {
				t.Errorf("%s imports %s", pkg, imp)
			}
		}
	}
}
