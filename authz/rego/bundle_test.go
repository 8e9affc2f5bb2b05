package rego_test

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ztgate/ztgate/authz"
	"github.com/ztgate/ztgate/authz/rego"
	"github.com/ztgate/ztgate/configs"
)

const usersPolicy = `package ztgate.users

default allow := false

allow if input.peer.service_account in data.ztgate.users.allowed
`

// TestBundleAndData: the same policy from .rego + data JSON, from a
// bundle directory, and from a bundle tarball.
func TestBundleAndData(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	policy := write("files/users.rego", usersPolicy)
	data := write("files/data.json", `{"ztgate": {"users": {"allowed": ["web"]}}}`)
	write("bundle/ztgate/users/policy.rego", usersPolicy)
	write("bundle/ztgate/users/data.json", `{"allowed": ["web"]}`)

	tarball := filepath.Join(dir, "bundle.tar.gz")
	f, err := os.Create(tarball)
	if err != nil {
		t.Fatal(err)
	}
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	for name, content := range map[string]string{
		"/ztgate/users/policy.rego": usersPolicy,
		"/ztgate/users/data.json":   `{"allowed": ["web"]}`,
	} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		r    configs.Rego
	}{
		{"files and data", configs.Rego{Files: []string{policy}, Data: data, Query: "data.ztgate.users.allow"}},
		{"bundle directory", configs.Rego{Bundle: filepath.Join(dir, "bundle"), Query: "data.ztgate.users.allow"}},
		{"bundle tarball", configs.Rego{Bundle: tarball, Query: "data.ztgate.users.allow"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := rego.New("users", &tc.r, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for sa, want := range map[string]bool{"web": true, "db": false} {
				a := &authz.Attributes{Peer: authz.PeerFromSPIFFEID("spiffe://example.org/ns/prod/sa/" + sa)}
				res, err := p.Check(context.Background(), a)
				if err != nil || res.Allowed != want {
					t.Errorf("%s: allowed=%v err=%v, want %v", sa, res.Allowed, err, want)
				}
			}
		})
	}
	if _, err := rego.New("x", &configs.Rego{Files: []string{policy}, Data: policy, Query: "data.ztgate.users.allow"}, time.Second); err == nil {
		t.Error("a data file that is not JSON must be refused")
	}
}
