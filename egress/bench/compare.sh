#!/usr/bin/env bash
# Compare the egress proxy with nginx stream ssl_preread and haproxy
# req.ssl_sni doing the same SNI allowlisting (1,000 names + allowed.test),
# for new TLS connections/s and bulk throughput, against a direct
# connection to the same TLS origin.
#
#   sudo egress/bench/compare.sh [rounds]      (default 3; DUR=10 seconds per run)
#
# Everything runs in a network namespace the script creates (loopback only)
# and deletes. Proxies are pinned to CPU 1 (one worker/thread; Go picks
# GOMAXPROCS=1 from the affinity mask); the load generator, the TLS origin
# (nginx) and the DNS server (dnsmasq) share CPU 0, as in
# shared/notes/peer-baselines.md (M4). ztgate runs in transparent mode
# (nftables REDIRECT + SO_ORIGINAL_DST, the same shape as the SNI
# passthrough peers) and, for reference, in CONNECT mode (one more round
# trip and a request head to parse per connection).
set -euo pipefail
ROUNDS=${1:-3}
DUR=${DUR:-10}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=$(mktemp -d /tmp/ztg-egress-bench.XXXXXX)
NS=ztgbench$$
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT
INNS=(ip netns exec "$NS")
HZ=$(getconf CLK_TCK)

echo "# building" >&2
(cd "$ROOT" && go build -o "$W/egressd" ./egress/bench/egressd && go build -o "$W/sniload" ./egress/bench/sniload)

echo "# certificates, allowlist, origin files" >&2
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$W/ca.key" -out "$W/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=allowed.test \
  -keyout "$W/leaf.key" -out "$W/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:allowed.test\n' > "$W/ext"
openssl x509 -req -in "$W/leaf.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial -days 2 \
  -extfile "$W/ext" -out "$W/leaf.crt" 2>/dev/null
cat "$W/leaf.crt" "$W/ca.pem" > "$W/chain.pem"
mkdir -p "$W/www"
echo ok > "$W/www/index.html"
truncate -s 4G "$W/www/big.bin"
chmod 755 "$W"; chmod -R a+rX "$W/www"   # nginx workers run as www-data
: > "$W/allow.lst"; : > "$W/map.conf"
for i in $(seq 0 999); do echo "svc$i.allowed.example" >> "$W/allow.lst"; done
echo allowed.test >> "$W/allow.lst"
while read -r n; do echo "$n 127.0.0.2:443;" >> "$W/map.conf"; done < "$W/allow.lst"
NAMES=$(paste -sd, "$W/allow.lst")

cat > "$W/origin.conf" <<EOC
worker_processes 1; daemon off; pid $W/origin.pid; error_log $W/origin.err;
events { worker_connections 4096; }
http { access_log off; sendfile on;
  server { listen 127.0.0.2:443 ssl; server_name allowed.test;
    ssl_certificate $W/chain.pem; ssl_certificate_key $W/leaf.key;
    ssl_protocols TLSv1.3; ssl_session_tickets off; ssl_session_cache off;
    root $W/www; keepalive_timeout 0; } }
EOC
cat > "$W/nginx.conf" <<EOC
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/nginx.err;
events { worker_connections 8192; }
stream {
  map \$ssl_preread_server_name \$up { hostnames; include $W/map.conf; default 127.0.0.1:1; }
  server { listen 127.0.0.1:20500; ssl_preread on; proxy_pass \$up; }
}
EOC
cat > "$W/haproxy.cfg" <<EOC
global
  nbthread 1
  maxconn 8192
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:21500
  tcp-request inspect-delay 5s
  tcp-request content accept if { req.ssl_hello_type 1 } { req.ssl_sni -i -f $W/allow.lst }
  tcp-request content reject
  default_backend be
backend be
  server origin 127.0.0.2:443
EOC
cat > "$W/ztgate.yaml" <<EOC
storage: $W
egress:
  listeners:
    - {name: transparent, mode: transparent, address: "127.0.0.1:3129"}
    - {name: connect, mode: connect, address: "127.0.0.1:3128"}
  resolver: {address: "127.0.0.1:5353"}
  limits: {max_connections_per_source: 10000}
  rules:
    - {name: bench, sni: [$NAMES], cidrs: [127.0.0.0/8]}
EOC

echo "# namespace $NS" >&2
ip netns add "$NS"
ip -n "$NS" link set lo up
# Connections from 127.0.0.5 to the origin are redirected to ztgate's
# transparent listener; everything else (the proxies' own dials) is not.
"${INNS[@]}" nft -f - <<EOC
table inet bench {
  chain out {
    type nat hook output priority -100; policy accept;
    ip saddr 127.0.0.5 ip daddr 127.0.0.2 tcp dport 443 redirect to :3129
  }
}
EOC

start() { # cpu name cmd...
  local cpu=$1 name=$2; shift 2
  "${INNS[@]}" taskset -c "$cpu" "$@" > "$W/$name.out" 2>&1 &
  PIDS+=($!)
  eval "PID_$name=$!"
}
start 0 origin nginx -c "$W/origin.conf"
start 0 dns dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
  --listen-address=127.0.0.1 --port=5353 --address=/allowed.test/127.0.0.2 --pid-file=
start 1 nginx nginx -c "$W/nginx.conf"
start 1 haproxy haproxy -f "$W/haproxy.cfg"
start 1 ztgate "$W/egressd" -c "$W/ztgate.yaml" ${EGRESS_CPUPROFILE:+-cpuprofile "$EGRESS_CPUPROFILE"}
for i in $(seq 50); do grep -q listening "$W/ztgate.out" 2>/dev/null && break; sleep 0.1; done
sleep 1

# cpu_ticks PID: utime+stime of the process and its direct children.
cpu_ticks() {
  local t=0 p
  for p in $1 $(ps -o pid= --ppid "$1" 2>/dev/null); do
    t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo $t
}

declare -A ADDR=( [direct]="-addr 127.0.0.2:443" [nginx]="-addr 127.0.0.1:20500"
  [haproxy]="-addr 127.0.0.1:21500" [ztgate]="-addr 127.0.0.2:443 -bind 127.0.0.5"
  [ztgate-connect]="-addr 127.0.0.1:3128 -connect allowed.test:443" )
declare -A PROC=( [direct]=origin [nginx]=nginx [haproxy]=haproxy [ztgate]=ztgate [ztgate-connect]=ztgate )
declare -A CURL=( [direct]="--resolve allowed.test:443:127.0.0.2 https://allowed.test/big.bin"
  [nginx]="--resolve allowed.test:20500:127.0.0.1 https://allowed.test:20500/big.bin"
  [haproxy]="--resolve allowed.test:21500:127.0.0.1 https://allowed.test:21500/big.bin"
  [ztgate]="--interface 127.0.0.5 --resolve allowed.test:443:127.0.0.2 https://allowed.test/big.bin"
  [ztgate-connect]="-x http://127.0.0.1:3128 https://allowed.test/big.bin" )
read -r -a PATHS <<<"${PATHS:-direct nginx haproxy ztgate ztgate-connect}"

echo "# allowlist checks" >&2
for p in nginx haproxy ztgate ztgate-connect; do
  url=${CURL[$p]/big.bin/}
  ok=$("${INNS[@]}" curl -s --max-time 5 --cacert "$W/ca.pem" $url || true)
  den=$("${INNS[@]}" curl -s --max-time 5 --cacert "$W/ca.pem" ${url//allowed.test/denied.test} 2>&1 && echo reached || echo refused)
  echo "check $p allowed.test=$(echo $ok) denied.test=$den" >&2
done

R="$W/results.tsv"
for round in $(seq "$ROUNDS"); do
  for p in "${PATHS[@]}"; do
    pid=$(eval echo "\$PID_${PROC[$p]}")
    t0=$(cpu_ticks "$pid")
    out=$("${INNS[@]}" taskset -c 0 "$W/sniload" ${ADDR[$p]} -sni allowed.test -ca "$W/ca.pem" -c 50 -d "${DUR}s")
    t1=$(cpu_ticks "$pid")
    conns=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' <<<"$out")
    rate=$(sed -n 's/.*rate=\([0-9]*\).*/\1/p' <<<"$out")
    us=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$conns" 'BEGIN{printf "%.0f", d/hz*1e6/n}')
    printf 'conn\t%s\t%s\t%s\t%s\n' "$p" "$round" "$rate" "$us" >> "$R"
    echo "round $round conn $p: $out proxy_us_per_conn=$us" >&2

    t0=$(cpu_ticks "$pid")
    speed=$("${INNS[@]}" taskset -c 0 curl -s -o /dev/null --max-time 15 -w '%{speed_download} %{size_download}' \
      --cacert "$W/ca.pem" ${CURL[$p]} || true)
    t1=$(cpu_ticks "$pid")
    read -r bps bytes <<<"$speed"
    mibs=$(awk -v b="$bps" 'BEGIN{printf "%.0f", b/1048576}')
    spg=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$bytes" 'BEGIN{printf "%.2f", (d/hz)/(n/1073741824)}')
    printf 'bulk\t%s\t%s\t%s\t%s\n' "$p" "$round" "$mibs" "$spg" >> "$R"
    echo "round $round bulk $p: ${mibs} MiB/s, proxy CPU s/GiB $spg" >&2
  done
done

median() { sort -n | awk '{a[NR]=$1} END{if (NR%2) print a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2]+a[NR/2+1])/2}'; }
med() { awk -F'\t' -v k="$1" -v p="$2" -v c="$3" '$1==k && $2==p {print $c}' "$R" | median; }
echo
echo "| path | new conns/s (median of $ROUNDS) | proxy CPU µs/conn | bulk MiB/s | proxy CPU s/GiB |"
echo "|---|---|---|---|---|"
for p in "${PATHS[@]}"; do
  spg=$(awk -F'\t' -v p="$p" '$1=="bulk" && $2==p {print $5}' "$R" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  echo "| $p | $(med conn "$p" 4) | $(med conn "$p" 5) | $(med bulk "$p" 4) | $spg |"
done
echo
for p in ztgate ztgate-connect; do
  awk -v a="$(med conn $p 4)" -v n="$(med conn nginx 4)" -v h="$(med conn haproxy 4)" -v d="$(med bulk direct 4)" -v b="$(med bulk $p 4)" -v p="$p" \
    'BEGIN{printf "%s: conns/s %.2fx nginx, %.2fx haproxy; bulk %.0f%% of direct\n", p, a/n, a/h, 100*b/d}'
done
