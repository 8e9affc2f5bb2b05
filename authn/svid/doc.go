// Package svid is the gateway's own SPIFFE identity: the X.509-SVID it
// presents to mesh upstreams and the trust bundles that verify SPIFFE
// peers. It reads the SVID from the SPIFFE Workload API (a SPIRE agent,
// with streamed rotations and federated bundles) or from watched PEM
// files, adds static per-trust-domain bundles, and builds the mutual-TLS
// client configuration for SPIFFE upstreams (go-spiffe tlsconfig with an
// authorizer for an exact ID, a list of IDs or a trust domain).
//
// The hot path reads one immutable snapshot from an atomic pointer, so a
// rotated SVID is used by the next handshake without locks or restarts.
//
// It must not know about routes, listeners or how a policy decides.
package svid
