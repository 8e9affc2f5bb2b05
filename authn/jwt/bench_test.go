package jwt

import (
	"net/http/httptest"
	"testing"
)

// BenchmarkVerify measures one request's JWT cost: first-seen tokens pay
// the RS256 signature check; repeated tokens are answered by the cache.
//
//	go test -run '^$' -bench Verify -benchmem ./authn/jwt/
func BenchmarkVerify(b *testing.B) {
	demo := sharedToken(b, "demo.jwt")
	cases := []struct {
		name  string
		cache string
	}{
		{"first-seen", "  token_cache_size: -1\n"},
		{"repeated", ""},
	}
	for _, bc := range cases {
		cfg := `
routes:
  - { name: details, match: { path_prefix: /details }, direct_response: { status: 200 } }
authn:
` + bc.cache + `  jwt:
    - issuer: testing@secure.istio.io
      jwks_file: ` + sharedJWKSPath(b) + "\n"
		a, _, _ := newAuth(b, cfg)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Verify(demo, "details"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := a.Verify(demo, "details"); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
		b.Run(bc.name+"/request", func(b *testing.B) {
			b.ReportAllocs()
			r := httptest.NewRequest("GET", "/details", nil)
			for b.Loop() {
				r.Header.Set("Authorization", "Bearer "+demo)
				if _, err := a.Authenticate(r, "details"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
