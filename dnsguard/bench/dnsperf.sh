#!/usr/bin/env bash
# dnsperf comparison of dnsguard (tunnel detection on and off) with CoreDNS
# (forward + cache) and dnsmasq, for cache hits and cache misses, pinned as
# in ../shared/notes/peer-baselines.md M5: servers on CPU 1, dnsperf and the
# stub upstream on CPU 0. Loopback only; every process is bounded and
# stopped by its own PID.
#
#   dnsguard/bench/dnsperf.sh              # from the repo root
#   DUR=15 REPS=3 dnsguard/bench/dnsperf.sh
#
# Needs dnsperf, dnsmasq, taskset (make deps) and CoreDNS:
#   go install github.com/coredns/coredns@latest
# Servers run pinned under taskset (which execs them, so $! is the server)
# and are stopped by PID after each run and by the EXIT trap; dnsperf runs
# under timeout(1).
# Server µs/query is the server's CPU time (utime+stime from /proc) divided
# by the queries it completed, so it stays meaningful on a busy machine.
set -euo pipefail
DUR=${DUR:-10}
REPS=${REPS:-1}
BASE=${BASE:-27400}
COREDNS=${COREDNS:-$(go env GOPATH)/bin/coredns}
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

if [ -n "${DNSGUARD_BIN:-}" ]; then cp "$DNSGUARD_BIN" "$W/dnsguard"; else go build -o "$W/dnsguard" ./dnsguard/internal/benchserver; fi
STUB=$BASE; P_COREDNS=$((BASE+1)); P_DNSMASQ=$((BASE+2)); P_ON=$((BASE+3)); P_OFF=$((BASE+4))

# Stub upstream (CPU 0): dnsmasq answers any name under bench. and miss.
for i in $(seq 0 499); do echo "host$i.bench A"; done > "$W/hit.txt"
awk 'BEGIN { for (i = 0; i < 1000000; i++) printf "x%d.d%d.miss A\n", i, i % 100000 }' > "$W/miss.txt"
taskset -c 0 dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
  --listen-address=127.0.0.1 --port=$STUB --pid-file= --address=/bench/192.0.2.100 --address=/miss/192.0.2.200 \
  --local-ttl=3600 --cache-size=0 --dns-forward-max=10000 2>"$W/stub.log" &
PIDS+=($!)
for _ in $(seq 50); do dig @127.0.0.1 -p $STUB +time=1 +tries=1 host0.bench A >/dev/null 2>&1 && break; sleep 0.2; done

cat > "$W/Corefile" <<EOC
.:$P_COREDNS {
  bind 127.0.0.1
  forward . 127.0.0.1:$STUB
  cache 3600
}
EOC
dnsguard_cfg() { # port mode
  cat <<EOC
dns:
  listen: ["127.0.0.1:$1"]
  upstreams: [{address: "127.0.0.1:$STUB"}]
  rate_limit: {qps: -1}
  cache: {max_entries: 100000}
  tunneling: {mode: $2}
EOC
}
dnsguard_cfg $P_ON block > "$W/on.yaml"
dnsguard_cfg $P_OFF off > "$W/off.yaml"

start_peer() { # name → sets PEER_PID, PEER_PORT
  case $1 in
    coredns) taskset -c 1 "$COREDNS" -conf "$W/Corefile" -quiet >"$W/coredns.log" 2>&1 & PEER_PORT=$P_COREDNS ;;
    dnsmasq) taskset -c 1 dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
               --listen-address=127.0.0.1 --port=$P_DNSMASQ --pid-file= --server=127.0.0.1#$STUB --cache-size=100000 \
               --dns-forward-max=10000 2>"$W/dnsmasq.log" & PEER_PORT=$P_DNSMASQ ;;
    dnsguard-on) taskset -c 1 "$W/dnsguard" -config "$W/on.yaml" >"$W/on.log" 2>&1 & PEER_PORT=$P_ON ;;
    dnsguard-off) taskset -c 1 "$W/dnsguard" -config "$W/off.yaml" >"$W/off.log" 2>&1 & PEER_PORT=$P_OFF ;;
  esac
  PEER_PID=$!
  PIDS+=($PEER_PID)
  for _ in $(seq 50); do dig @127.0.0.1 -p "$PEER_PORT" +time=1 +tries=1 host0.bench A >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "$1 did not start" >&2; return 1
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

PEERS=${PEERS:-"dnsmasq dnsguard-on dnsguard-off"}
if [ -x "$COREDNS" ]; then case " $PEERS " in *" coredns "*) ;; *) PEERS="coredns $PEERS" ;; esac; else PEERS=${PEERS/coredns/}; echo "no CoreDNS at $COREDNS: skipped" >&2; fi
printf "%-8s %-13s %4s %10s %10s %12s  %s\n" scenario peer rep qps lost "server_us/q" rcodes
for scenario in ${SCENARIOS:-hit miss}; do
  for peer in $PEERS; do
    for rep in $(seq "$REPS"); do
      start_peer $peer
      SP=$PEER_PID # taskset execs the server: same PID
      if [ $scenario = hit ]; then
        taskset -c 0 dnsperf -s 127.0.0.1 -p $PEER_PORT -d "$W/hit.txt" -n 1 >/dev/null 2>&1 # warm the cache
        FILE=$W/hit.txt
      else
        FILE=$W/miss.txt
      fi
      T0=$(cpu_ticks "$SP")
      taskset -c 0 timeout $((DUR + 30)) dnsperf -s 127.0.0.1 -p $PEER_PORT -d "$FILE" -l "$DUR" -c 4 -T 1 -q 200 > "$W/out.txt" 2>&1 || true
      T1=$(cpu_ticks "$SP")
      kill $PEER_PID 2>/dev/null || true; wait $PEER_PID 2>/dev/null || true
      Q=$(awk '/Queries completed:/ { print $3 }' "$W/out.txt")
      [ -n "${VERBOSE:-}" ] && cat "$W/out.txt" >&2
      # A run whose answers are not all NOERROR measured something else
      # (a failing stub, a refused client): say so next to the number.
      RC=$(awk '/Response codes:/ { $1 = $2 = ""; print }' "$W/out.txt" | tr -d ' ')
      L=$(awk '/Queries lost:/ { print $3 }' "$W/out.txt")
      QPS=$(awk '/Queries per second:/ { print $4 }' "$W/out.txt")
      HZ=$(getconf CLK_TCK)
      US=$(awk -v t=$((T1 - T0)) -v hz="$HZ" -v q="${Q:-0}" 'BEGIN { if (q > 0) printf "%.2f", t / hz * 1e6 / q; else print "n/a" }')
      printf "%-8s %-13s %4s %10s %10s %12s  %s\n" $scenario $peer "$rep" "${QPS:-n/a}" "${L:-n/a}" "$US" "$RC"
    done
  done
done
