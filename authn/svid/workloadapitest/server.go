// Package workloadapitest is a small SPIFFE Workload API server for tests:
// it speaks the protocol a SPIRE agent speaks on its unix socket
// (go-spiffe's generated SpiffeWorkloadAPI gRPC service, the
// "workload.spiffe.io: true" security header), issues short-lived
// X.509-SVIDs from a test CA, rotates them on demand, and can be stopped
// and restarted on the same socket. No SPIRE binary can run here, so this
// stands in for the agent; it is imported by tests only.
package workloadapitest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// CA is a test certificate authority for one trust domain.
type CA struct {
	TrustDomain spiffeid.TrustDomain
	Cert        *x509.Certificate
	Key         crypto.Signer
}

// NewCA makes a self-signed CA for the trust domain td (e.g. example.org).
func NewCA(td string) (*CA, error) {
	trust, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{Organization: []string{"ztgate test CA"}, CommonName: td},
		URIs:                  []*url.URL{trust.ID().URL()},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{TrustDomain: trust, Cert: cert, Key: key}, nil
}

// Bundle is the CA's trust bundle.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.Cert})
}

// BundlePEM is the CA certificate as PEM.
func (ca *CA) BundlePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// Issue makes an X.509-SVID for id valid for ttl (from a minute ago, so a
// short ttl keeps the whole lifetime in the near future), usable for
// client and server authentication.
func (ca *CA) Issue(id string, ttl time.Duration) (*x509svid.SVID, error) {
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{Organization: []string{"SPIRE"}},
		URIs:         []*url.URL{sid.URL()},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Second),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: sid, Certificates: []*x509.Certificate{cert}, PrivateKey: key}, nil
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}

// Server is a Workload API server on a unix socket.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	path string
	ca   *CA
	id   string
	ttl  time.Duration

	mu        sync.Mutex
	svid      *x509svid.SVID
	federated []*x509bundle.Bundle
	gen       chan struct{} // closed and replaced on every change
	gs        *grpc.Server
	done      chan struct{}
	rejected  int // requests without the security header
}

// NewServer prepares a server for socketPath issuing SVIDs for id from ca,
// each valid for ttl. Call Start.
func NewServer(socketPath string, ca *CA, id string, ttl time.Duration) (*Server, error) {
	s := &Server{path: socketPath, ca: ca, id: id, ttl: ttl, gen: make(chan struct{})}
	if _, err := s.Rotate(); err != nil {
		return nil, err
	}
	return s, nil
}

// Addr is the socket address as go-spiffe and ztgate's config spell it.
func (s *Server) Addr() string { return "unix://" + s.path }

// Start listens on the socket (again, after Stop).
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gs != nil {
		return errors.New("workloadapitest: already started")
	}
	_ = os.Remove(s.path)
	lis, err := net.Listen("unix", s.path)
	if err != nil {
		return err
	}
	gs := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(gs, s)
	s.gs, s.done = gs, make(chan struct{})
	done := s.done
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	return nil
}

// Stop closes the socket and every stream, as an agent that exits.
func (s *Server) Stop() {
	s.mu.Lock()
	gs, done := s.gs, s.done
	s.gs = nil
	s.mu.Unlock()
	if gs == nil {
		return
	}
	gs.Stop()
	<-done
}

// Rotate issues a new SVID and streams it to every watcher.
func (s *Server) Rotate() (*x509svid.SVID, error) {
	sv, err := s.ca.Issue(s.id, s.ttl)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.svid = sv
	s.bumpLocked()
	s.mu.Unlock()
	return sv, nil
}

// SetTTL changes the lifetime of the SVIDs issued from now on.
func (s *Server) SetTTL(ttl time.Duration) {
	s.mu.Lock()
	s.ttl = ttl
	s.mu.Unlock()
}

// SetFederated sets the federated bundles sent with the SVID.
func (s *Server) SetFederated(bundles ...*x509bundle.Bundle) {
	s.mu.Lock()
	s.federated = bundles
	s.bumpLocked()
	s.mu.Unlock()
}

// Current is the SVID being served.
func (s *Server) Current() *x509svid.SVID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.svid
}

// Rejected counts requests refused for a missing security header.
func (s *Server) Rejected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rejected
}

func (s *Server) bumpLocked() {
	close(s.gen)
	s.gen = make(chan struct{})
}

// checkHeader enforces what SPIRE enforces: the workload.spiffe.io: true
// metadata, which proves the caller is a Workload API client and not a
// browser or a confused proxy.
func (s *Server) checkHeader(ctx context.Context) error {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok || len(md.Get("workload.spiffe.io")) != 1 || md.Get("workload.spiffe.io")[0] != "true" {
		s.mu.Lock()
		s.rejected++
		s.mu.Unlock()
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

func (s *Server) response() (*workload.X509SVIDResponse, <-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv := s.svid
	var chain []byte
	for _, c := range sv.Certificates {
		chain = append(chain, c.Raw...)
	}
	key, err := x509.MarshalPKCS8PrivateKey(sv.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	resp := &workload.X509SVIDResponse{
		Svids: []*workload.X509SVID{{
			SpiffeId:    sv.ID.String(),
			X509Svid:    chain,
			X509SvidKey: key,
			Bundle:      s.ca.Cert.Raw,
		}},
		FederatedBundles: map[string][]byte{},
	}
	for _, b := range s.federated {
		var raw []byte
		for _, c := range b.X509Authorities() {
			raw = append(raw, c.Raw...)
		}
		resp.FederatedBundles[b.TrustDomain().IDString()] = raw
	}
	return resp, s.gen, nil
}

// FetchX509SVID streams the SVID, and again after every change.
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	if err := s.checkHeader(stream.Context()); err != nil {
		return err
	}
	for {
		resp, gen, err := s.response()
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-gen:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// FetchX509Bundles streams the bundles (own and federated).
func (s *Server) FetchX509Bundles(_ *workload.X509BundlesRequest, stream workload.SpiffeWorkloadAPI_FetchX509BundlesServer) error {
	if err := s.checkHeader(stream.Context()); err != nil {
		return err
	}
	for {
		resp, gen, err := s.response()
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		out := &workload.X509BundlesResponse{Bundles: map[string][]byte{s.ca.TrustDomain.IDString(): s.ca.Cert.Raw}}
		for td, raw := range resp.FederatedBundles {
			out.Bundles[td] = raw
		}
		if err := stream.Send(out); err != nil {
			return err
		}
		select {
		case <-gen:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// WriteFiles writes sv and the CA bundle as PEM files the way
// spiffe-helper does (cert chain, PKCS#8 key, bundle).
func WriteFiles(sv *x509svid.SVID, ca *CA, certPath, keyPath, bundlePath string) error {
	certPEM, keyPEM, err := sv.Marshal()
	if err != nil {
		return err
	}
	for path, data := range map[string][]byte{certPath: certPEM, keyPath: keyPEM, bundlePath: ca.BundlePEM()} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}
