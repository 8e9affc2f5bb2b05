#!/usr/bin/env bash
# Full TLS 1.3 handshakes/s with one server core (taskset -c 1) and
# bench/cmd/hsload on core 0 (50 workers, X25519, no resumption, one GET
# per connection): the ztgate binary with accel provider go and openssl,
# nginx, haproxy and caddy, in one run, RSA-2048 then ECDSA P-256. The
# peers are set up as zbench sets them (resumption off). Before its load,
# each server is asked once by `hsbench check` what it negotiates (TLS
# 1.3, cipher suite, X25519, certificate size) and how many session
# tickets it sends: ztgate sends one (its default; about 3 µs), nginx
# 1.22 and haproxy 2.6 send two even with tickets and the session cache
# off, caddy none; no client ever resumes. Prints server CPU µs per
# handshake and the ratios of the issue's goal.
#
#   accel/internal/hsbench/m1.sh [seconds] [rounds]
#   ZTGATE=/tmp/me/ztgate accel/internal/hsbench/m1.sh 8 2
#
# Each key's round holds /tmp/ztgate-bench.lock (shared with zbench and
# the other benchmarks on this host), so measurements never overlap.
set -euo pipefail
D=${1:-8}; ROUNDS=${2:-1}
LOCK=${LOCK:-/tmp/ztgate-bench.lock}
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
cd "$(dirname "$0")/../../.."
go build -o "$W/hsbench" ./accel/internal/hsbench
go build -o "$W/hsload" ./bench/cmd/hsload
ZT=${ZTGATE:-}
if [ -z "$ZT" ]; then go build -o "$W/ztgate" ./cmd/ztgate; ZT=$W/ztgate; fi
CADDY=$(command -v caddy || true); [ -z "$CADDY" ] && [ -x "$HOME/go/bin/caddy" ] && CADDY=$HOME/go/bin/caddy
"$W/hsbench" gen -dir "$W"

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
declare -A US
# run NAME KEY PID PORT: drive load at a server already listening.
run() {
  local name=$1 key=$2 pid=$3 port=$4
  wait_port "$port" || { echo "$name: never listened"; return 0; }
  printf "%-16s %s\n" "$name" "$("$W/hsbench" check -addr "127.0.0.1:$port" -ca "$W/$key.crt" 2>&1)"
  local t0; t0=$(ticks "$pid")
  local out; out=$(taskset -c 0 "$W/hsload" -addr "127.0.0.1:$port" -sni bench.test -ca "$W/$key.crt" -c 50 -d "${D}s")
  local t1; t1=$(ticks "$pid")
  local n; n=$(sed -n 's/.*handshakes=\([0-9]*\).*/\1/p' <<<"$out")
  local rate; rate=$(sed -n 's/.*rate=\([0-9.]*\).*/\1/p' <<<"$out")
  local cpu=$(( (t1 - t0) * 10 ))   # ms (100 Hz ticks)
  local us=0; [ "${n:-0}" -gt 0 ] && us=$(( cpu * 1000 / n ))
  US[$name]=$us
  printf "%-16s %-11s %8s/s  server cpu %6d ms  %5d µs/handshake  %s\n" "$name" "$key" "$rate" "$cpu" "$us" "$(grep -o 'failures=[0-9]*' <<<"$out")"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
ztgate() { # PROVIDER KEY
  local prov=$1 key=$2 p; p=$(free_port)
  cat >"$W/zt.yaml" <<Y
storage: $W/zt-state
log: { level: error, access_log: false }
accel: { provider: $prov, required: true }
listeners:
  - name: bench
    address: "127.0.0.1:$p"
    protocols: [h1, h2]
    tls: { files: [{ cert: "$W/$key.crt", key: "$W/$key.key" }] }
    limits: { max_connections: 20000 }
routes:
  - name: r
    direct_response: { status: 200, body: "ok" }
Y
  GOMAXPROCS=1 taskset -c 1 "$ZT" run -c "$W/zt.yaml" >"$W/zt.log" 2>&1 &
  local pid=$!
  run "ztgate+$prov" "$key" $pid "$p" || cat "$W/zt.log"
  stop $pid
}
nginx_() {
  local key=$1 p; p=$(free_port); mkdir -p "$W/nginx/logs"
  cat >"$W/nginx.conf" <<NG
daemon off; master_process off; worker_processes 1; worker_rlimit_nofile 20000;
error_log $W/nginx/error.log; pid $W/nginx/nginx.pid;
events { worker_connections 19000; }
http { access_log off;
  server { listen 127.0.0.1:$p ssl http2 backlog=4096; ssl_certificate $W/$key.crt; ssl_certificate_key $W/$key.key;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets off; ssl_session_cache off;
    location / { return 200 "ok"; } } }
NG
  taskset -c 1 nginx -p "$W/nginx" -c "$W/nginx.conf" 2>"$W/nginx.err" &
  local pid=$!
  run nginx "$key" $pid "$p" || cat "$W/nginx.err"
  stop $pid
}
haproxy_() {
  local key=$1 p; p=$(free_port); cat "$W/$key.crt" "$W/$key.key" >"$W/$key.pem"
  cat >"$W/haproxy.cfg" <<HA
global
  nbthread 1
  maxconn 9000
  no strict-limits
  tune.ssl.cachesize 0
  ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:$p ssl crt $W/$key.pem alpn h2,http/1.1
  http-request return status 200 content-type text/plain string ok
HA
  taskset -c 1 haproxy -db -f "$W/haproxy.cfg" >"$W/haproxy.err" 2>&1 &
  local pid=$!
  run haproxy "$key" $pid "$p" || cat "$W/haproxy.err"
  stop $pid
}
caddy_() {
  local key=$1 p; p=$(free_port)
  cat >"$W/caddy.json" <<CJ
{"admin": {"disabled": true}, "logging": {"logs": {"default": {"level": "ERROR"}}},
 "storage": {"module": "file_system", "root": "$W/caddy-state"},
 "apps": {"http": {"servers": {"bench": {"listen": ["127.0.0.1:$p"], "protocols": ["h1", "h2"],
   "automatic_https": {"disable": true}, "tls_connection_policies": [{"default_sni": "bench.test"}],
   "routes": [{"handle": [{"handler": "static_response", "body": "ok"}]}]}}},
  "tls": {"certificates": {"load_files": [{"certificate": "$W/$key.crt", "key": "$W/$key.key"}]},
          "session_tickets": {"disabled": true}}}}
CJ
  GOMAXPROCS=1 taskset -c 1 "$CADDY" run --config "$W/caddy.json" >"$W/caddy.log" 2>&1 &
  local pid=$!
  run caddy "$key" $pid "$p" || cat "$W/caddy.log"
  stop $pid
}
ratio() { # A B: A/B with two decimals
  [ "${2:-0}" -gt 0 ] && [ "${1:-0}" -gt 0 ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }' || echo "n/a"
}
for round in $(seq "$ROUNDS"); do
  for key in rsa2048 ecdsa_p256; do
    US=()
    exec 9>"$LOCK"; flock 9
    ztgate go "$key"
    ztgate openssl "$key"
    command -v nginx >/dev/null && nginx_ "$key"
    command -v haproxy >/dev/null && haproxy_ "$key"
    [ -n "$CADDY" ] && caddy_ "$key"
    flock -u 9; exec 9>&-
    goal3="" goal1=""; [ "$key" = rsa2048 ] && goal3=" (goal ≥ 3×)" goal1=" (goal ≥ 1.0×)"
    echo "  $key, CPU per handshake: ztgate openssl vs go $(ratio "${US[ztgate+go]:-0}" "${US[ztgate+openssl]:-0}")$goal3, vs nginx $(ratio "${US[nginx]:-0}" "${US[ztgate+openssl]:-0}")$goal1"
  done
done
