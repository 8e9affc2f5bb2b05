// Package dnsguard is ztgate's DNS proxy: the only resolver workloads can
// reach. It answers over UDP and TCP, applies per-client-group allow and
// deny lists, rate-limits clients, detects DNS tunnels and exfiltration
// (package tunnel), caches answers (package cache), forwards to upstream
// resolvers over UDP, TCP or DNS-over-TLS, and records which addresses it
// handed to which client so that egress can require them (Resolved).
//
// It owns the DNS data path and its per-client state. It must not know
// TLS: DNS-over-TLS connections come from Deps.DialTLS (package dot), so
// this package does not import crypto/tls itself. miekg/dns stays behind
// this package's own types; the exported API speaks netip and strings.
package dnsguard
