#!/usr/bin/env bash
# Installs what the tests need on Debian 12, only what is missing, so a
# second run costs nothing. Called by `make deps` (and so `make test`).
set -euo pipefail
need=()
check() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
check curl curl
check openssl openssl
check h2load nghttp2-client
check nghttpd nghttp2-server
check dig dnsutils
check kdig knot-dnsutils
check pebble pebble
check iodine iodine
check dns2tcpc dns2tcp
check testssl testssl.sh
check nginx nginx
check haproxy haproxy
check wrk wrk
check dnsperf dnsperf
check dnsmasq dnsmasq-base
check softhsm2-util softhsm2
check pkcs11-tool opensc
check ip iproute2
check nft nftables
check taskset util-linux
[ -e /usr/lib/x86_64-linux-gnu/libcrypto.so.3 ] || need+=(libssl3)
[ -d /usr/share/nginx/modules-available ] && [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
GOBIN=$(go env GOPATH)/bin
[ -x "$GOBIN/h2spec" ] || GOFLAGS= go install github.com/summerwind/h2spec/cmd/h2spec@latest
# Peers for bench/ (and its smoke test in make test): newest releases.
[ -x "$GOBIN/caddy" ] || GOFLAGS= go install github.com/caddyserver/caddy/v2/cmd/caddy@latest
[ -x "$GOBIN/coredns" ] || GOFLAGS= go install github.com/coredns/coredns@latest
echo "deps: ok"
# dnsguard's real-tunnel tests serve their payload with python3 -m http.server.
command -v python3 >/dev/null 2>&1 || { SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3 >/dev/null; }
