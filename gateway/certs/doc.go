// Package certs owns the gateway's server certificates: where they come
// from (an ACME CA, certificate and key files, or the local CA the gateway
// creates under its storage directory), keeping them renewed and stapled
// through certmagic, and picking the right one for each TLS handshake.
//
// One Manager lives for the whole process. Apply takes a new config on
// reload; the *tls.Config values handed out by TLSConfig keep working
// across reloads because they read the current snapshot on every
// handshake.
//
// The package must not know about routes, upstreams or policies, and it
// does not open the gateway's listeners: the gateway owns the sockets and
// asks certs for a tls.Config and for the ACME HTTP-01 handler.
package certs
