package accel

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/ztgate/ztgate/configs"
)

// BenchmarkSign measures one signature per provider and key type, called
// on the provider's key directly and through the engine (queue, worker,
// and with batching on, the batch collection), from parallel goroutines.
//
//	go test -run XXX -bench Sign -benchtime 2s ./accel/
func BenchmarkSign(b *testing.B) {
	digest := sha256.Sum256([]byte("bench"))
	for _, p := range []string{"go", "openssl"} {
		for _, kt := range []string{"rsa2048", "ecdsa_p256"} {
			key := testKeys()[kt]
			var opts crypto.SignerOpts = crypto.SHA256
			if kt == "rsa2048" {
				opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
			}
			for _, mode := range []struct {
				name     string
				direct   bool
				deadline time.Duration
			}{{"direct", true, 0}, {"engine", false, 0}, {"engine_batch50us", false, 50 * time.Microsecond}} {
				b.Run(fmt.Sprintf("%s/%s/%s", p, kt, mode.name), func(b *testing.B) {
					e, err := New(configs.Accel{Provider: p, Required: true, Batch: configs.AccelBatch{Size: 8, Deadline: mode.deadline}}, Deps{})
					if err != nil {
						b.Skip(err)
					}
					defer e.Close()
					c, err := e.Wrap(selfSigned(b, key))
					if err != nil {
						b.Fatal(err)
					}
					s := c.PrivateKey.(*signer)
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							var err error
							if mode.direct {
								_, err = s.key.Sign(digest[:], opts)
							} else {
								_, err = s.Sign(nil, digest[:], opts)
							}
							if err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
		}
	}
}
