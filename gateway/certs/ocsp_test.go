package certs

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"crypto/tls"

	"golang.org/x/crypto/ocsp"
)

// TestOCSPStapling serves file certificates whose CA runs an OCSP
// responder on loopback: with ocsp_stapling on (the default) the
// handshake carries a Good response; with it off, none is fetched.
func TestOCSPStapling(t *testing.T) {
	ca := newTestCA(t)
	var queries atomic.Int32
	responder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries.Add(1)
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req, err := ocsp.ParseRequest(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		now := time.Now()
		resp, err := ocsp.CreateResponse(ca.cert, ca.cert, ocsp.Response{
			Status: ocsp.Good, SerialNumber: req.SerialNumber,
			ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(30 * time.Minute),
		}, ca.key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		_, _ = w.Write(resp)
	}))
	t.Cleanup(responder.Close)
	ca.ocspURL = responder.URL

	for _, tc := range []struct {
		name    string
		stapled bool
	}{
		{"on", true},
		{"off", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := queries.Load()
			dir, storage := t.TempDir(), t.TempDir()
			certPath, keyPath, leaf := ca.leaf(t, dir, "site", "ocsp.ztgate.test")
			yaml := filesConfig(storage, [2]string{certPath, keyPath}) + fmt.Sprintf("      ocsp_stapling: %v\n", tc.stapled)
			m := newManager(t, parseConfig(t, yaml), Deps{})
			addr := serveTLS(t, m, "files")
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
				&tls.Config{ServerName: "ocsp.ztgate.test", RootCAs: ca.pool})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			staple := conn.ConnectionState().OCSPResponse
			if !tc.stapled {
				if len(staple) != 0 || queries.Load() != before {
					t.Fatalf("ocsp_stapling: false, yet %d bytes stapled and %d responder queries", len(staple), queries.Load()-before)
				}
				return
			}
			if len(staple) == 0 {
				t.Fatal("no OCSP response stapled")
			}
			resp, err := ocsp.ParseResponseForCert(staple, leaf, ca.cert)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != ocsp.Good {
				t.Fatalf("stapled status %d, want Good", resp.Status)
			}
		})
	}
}
