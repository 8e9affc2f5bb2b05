// Package accel offloads TLS private-key operations behind Go's
// crypto.Signer, so that crypto/tls and the certificate manager stay
// unchanged while signatures run in a faster or safer place.
//
// An Engine owns one Provider (go, openssl or pkcs11; auto picks the
// fastest by a startup self-test), a bounded queue and a pool of workers
// sized to the cores. Wrap returns a copy of a tls.Certificate whose
// PrivateKey is a Signer served by the engine; the key is imported into
// the provider once per certificate (cached by the leaf's fingerprint).
// A full queue fails the handshake at once instead of growing memory.
// Workers can collect concurrent signatures into batches (up to N, or a
// short deadline) for multi-buffer providers.
//
// Tickets owns rotating TLS session-ticket keys (random, or read from a
// file shared by several gateways) and installs them on registered
// tls.Config values.
//
// accel must not know listeners, routes or certmagic: it receives
// certificates and keys and hands back signers.
package accel
