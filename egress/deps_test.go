package egress

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps DESIGN.md's "must not know" column true: egress
// does not import dnsguard (it declares Resolver and ResolvedChecker
// instead) nor the ingress gateway or policy engines.
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", "github.com/ztgate/ztgate/egress").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"/dnsguard", "/gateway", "/authz", "/authn"} {
			if strings.HasPrefix(dep, "github.com/ztgate/ztgate") && strings.Contains(dep, banned) {
				t.Errorf("egress imports %s", dep)
			}
		}
	}
}
