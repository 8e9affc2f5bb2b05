#!/usr/bin/env bash
# Full TLS 1.3 handshakes/s, one server core (taskset -c 1), the hsbench
# Go client on core 0: ztgate's accel providers against nginx and
# haproxy, each with resumption off, one GET per connection.
#   accel/internal/hsbench/m1.sh [seconds] [rounds]
set -euo pipefail
D=${1:-10}; ROUNDS=${2:-1}
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
cd "$(dirname "$0")/../../.."
go build -o "$W/hsbench" ./accel/internal/hsbench
"$W/hsbench" gen -dir "$W"
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# run NAME KEY PID PORT: drive load at a server already listening.
run() {
  local name=$1 key=$2 pid=$3 port=$4
  wait_port "$port"
  local t0; t0=$(ticks "$pid")
  local out; out=$(taskset -c 0 "$W/hsbench" load -addr 127.0.0.1:$port -ca "$W/$key.crt" -c 50 -d ${D}s)
  local t1; t1=$(ticks "$pid")
  local n; n=$(sed -n 's/.*handshakes=\([0-9]*\).*/\1/p' <<<"$out" | head -1)
  local rate; rate=$(sed -n 's/.*rate=\([0-9]*\).*/\1/p' <<<"$out")
  local cpu=$(( (t1 - t0) * 10 ))   # ms (100 Hz ticks)
  local us=0; [ "$n" -gt 0 ] && us=$(( cpu * 1000 / n ))
  printf "%-14s %-11s %8s/s  server cpu %6d ms  %5d µs/handshake  %s\n" "$name" "$key" "$rate" "$cpu" "$us" "$(grep -o 'failures=[0-9]*' <<<"$out")"
}
for round in $(seq "$ROUNDS"); do
for key in rsa2048 ecdsa_p256; do
  for prov in go openssl; do
    p=$(free_port)
    taskset -c 1 "$W/hsbench" serve -provider $prov -cert "$W/$key.crt" -key "$W/$key.key" -addr 127.0.0.1:$p -d $((D+5))s >"$W/srv.out" 2>"$W/srv.err" &
    pid=$!
    run "ztgate+$prov" $key $pid $p
    kill $pid; wait $pid 2>/dev/null || true
  done
  if command -v nginx >/dev/null; then
    p=$(free_port); mkdir -p "$W/nginx/logs"
    cat >"$W/nginx.conf" <<NG
daemon off; master_process off; worker_processes 1; error_log $W/nginx/error.log; pid $W/nginx/nginx.pid;
events { worker_connections 4096; }
http { access_log off; ssl_session_tickets off; ssl_session_cache off;
  server { listen 127.0.0.1:$p ssl; ssl_certificate $W/$key.crt; ssl_certificate_key $W/$key.key; ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_timeout 0; location / { return 200 "ok"; } } }
NG
    taskset -c 1 nginx -p "$W/nginx" -c "$W/nginx.conf" 2>"$W/nginx.err" &
    pid=$!
    run nginx $key $pid $p || cat "$W/nginx.err"
    kill $pid; wait $pid 2>/dev/null || true
  fi
  if command -v haproxy >/dev/null; then
    p=$(free_port); cat "$W/$key.crt" "$W/$key.key" >"$W/$key.pem"
    cat >"$W/haproxy.cfg" <<HA
global
  nbthread 1
  tune.ssl.cachesize 0
defaults
  mode http
  timeout client 10s
  timeout connect 5s
  timeout server 10s
frontend f
  bind 127.0.0.1:$p ssl crt $W/$key.pem no-tls-tickets
  http-request return status 200 content-type text/plain string ok
HA
    taskset -c 1 haproxy -db -f "$W/haproxy.cfg" >"$W/haproxy.err" 2>&1 &
    pid=$!
    run haproxy $key $pid $p || cat "$W/haproxy.err"
    kill $pid; wait $pid 2>/dev/null || true
  fi
done
done
