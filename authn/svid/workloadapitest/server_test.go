package workloadapitest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// TestProtocol: go-spiffe's own client fetches the SVID and bundles, and a
// request without the security header is refused as SPIRE refuses it.
func TestProtocol(t *testing.T) {
	dir, err := os.MkdirTemp("", "wlapi")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ca, err := NewCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	partner, err := NewCA("partner.org")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(filepath.Join(dir, "agent.sock"), ca, "spiffe://example.org/gw", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetFederated(partner.Bundle())
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := workloadapi.New(ctx, workloadapi.WithAddr(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	x, err := c.FetchX509Context(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := x.DefaultSVID(); got.ID.String() != "spiffe://example.org/gw" || got.Certificates[0].SerialNumber.Cmp(srv.Current().Certificates[0].SerialNumber) != 0 {
		t.Errorf("SVID %v", got.ID)
	}
	if x.Bundles.Len() != 2 {
		t.Errorf("bundles: %d; want own and federated", x.Bundles.Len())
	}
	bundles, err := c.FetchX509Bundles(ctx)
	if err != nil || bundles.Len() != 2 {
		t.Errorf("FetchX509Bundles: %v, %v", bundles, err)
	}

	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "agent.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || srv.Rejected() != 1 {
		t.Fatalf("without the security header: %v (rejected %d); want InvalidArgument", err, srv.Rejected())
	}
}
