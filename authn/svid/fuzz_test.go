package svid

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ztgate/ztgate/configs"
)

func seed(f *testing.F, name string) []byte {
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		f.Fatal(err)
	}
	return data
}

// FuzzParseSVIDFiles: whatever an agent (or a crash mid-write) leaves in
// the SVID files, parsing returns an error or a verified SVID, never a
// panic. Seeds: a good set from testdata/, truncations of it, and swaps.
func FuzzParseSVIDFiles(f *testing.F) {
	cert, key, bundle := seed(f, "svid.pem"), seed(f, "svid_key.pem"), seed(f, "bundle.pem")
	f.Add(cert, key, bundle)
	f.Add(cert[:len(cert)/2], key, bundle)
	f.Add(cert, key[:len(key)-40], bundle)
	f.Add(cert, key, bundle[:10])
	f.Add(key, cert, bundle)
	f.Add(bundle, key, cert)
	f.Add([]byte{}, []byte{}, []byte{})
	// Verify inside the seed CA's validity, so the good seed keeps taking
	// the accept path after the seed certificates expire.
	ca, err := x509bundle.Parse(spiffeid.RequireTrustDomainFromString("example.org"), bundle)
	if err != nil {
		f.Fatal(err)
	}
	now := ca.X509Authorities()[0].NotBefore.Add(time.Hour)
	if _, _, err := parseSVIDFiles(cert, key, bundle, "", now); err != nil {
		f.Fatalf("good seed rejected: %v", err)
	}
	f.Fuzz(func(t *testing.T, cert, key, bundle []byte) {
		sv, b, err := parseSVIDFiles(cert, key, bundle, "", now)
		if err != nil {
			return
		}
		if sv == nil || b == nil || len(sv.Certificates) == 0 || b.Empty() {
			t.Fatalf("accepted an incomplete set: %v %v", sv, b)
		}
		if sv.ID.TrustDomain() != b.TrustDomain() {
			t.Fatalf("bundle for %s accepted for SVID %s", b.TrustDomain(), sv.ID)
		}
	})
}

// FuzzParseStaticBundle: PEM or SPIFFE bundle JSON from
// identity.trust_bundles.
func FuzzParseStaticBundle(f *testing.F) {
	pem, doc := seed(f, "bundle.pem"), seed(f, "bundle.json")
	f.Add(pem)
	f.Add(doc)
	f.Add(doc[:len(doc)/2])
	f.Add([]byte(`{"keys":[{"use":"x509-svid","kty":"EC","x5c":["AAAA"]}]}`))
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	tb := configs.TrustBundle{TrustDomain: "example.org", File: "bundle"}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := parseStaticBundle(tb, data, time.Now())
		if err != nil {
			return
		}
		if e.b.Empty() || e.b.TrustDomain().Name() != "example.org" {
			t.Fatalf("accepted %+v", e)
		}
	})
}
