package authn_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps DESIGN.md's "must not know" column true: authn
// answers who is calling, it does not decide (authz) or route (gateway).
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/ztgate/ztgate/authn", "github.com/ztgate/ztgate/authn/jwt", "github.com/ztgate/ztgate/authn/peer").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/ztgate/ztgate/authz", "github.com/ztgate/ztgate/gateway", "github.com/ztgate/ztgate/egress", "github.com/ztgate/ztgate/dnsguard"} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("authn imports %s", dep)
			}
		}
	}
}
