#!/usr/bin/env bash
# fleetsim throughput: signed commands per second over loopback keep-alive
# HTTP with wrk, against a generated fleet (default 10,000 cars).
#
#   perf/bench_sim.sh [BUILD_DIR]      (default: build)
#   env: CARS=10000 ROUNDS=60 DURATION=8 CONNS=64 THREADS=2 TLS=0
#   TLS=1 serves HTTPS with a throwaway self-signed certificate (results
#   then go to perf/results/sim-tls.*).
#
# Honest by construction: every request is a distinct, freshly signed
# command (real handshake per car, strictly increasing counters, one-hour
# expiry), fully verified by the car side; nothing is replayed unless the
# run outlasts the pre-signed file, and then the replays are refused and
# counted as faults.  The figure reported is the simulator's own count of
# commands verified and executed during the run (GET /sim/stats), divided
# by wrk's duration; wrk's req/s is printed beside it.
# Results: perf/results/sim.txt (human) and perf/results/sim.json.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
CARS=${CARS:-10000}
ROUNDS=${ROUNDS:-60}
DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
TLS=${TLS:-0}
PY=/usr/bin/python3
BIN=$BUILD/bin/fleetsim
[ -x "$BIN" ] || { echo "bench_sim: no $BIN; build first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench_sim: wrk not installed (Debian package wrk)" >&2; exit 1; }
if [ $((CARS % THREADS)) -ne 0 ]; then echo "bench_sim: CARS must be a multiple of THREADS" >&2; exit 1; fi

tmp=$(mktemp -d /tmp/bench-sim-XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

$PY - "$tmp" <<'EOF'
import sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
k = ec.generate_private_key(ec.SECP256R1())
d = sys.argv[1]
open(d + "/fleet.pem", "wb").write(k.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
open(d + "/fleet_pub.pem", "wb").write(k.public_key().public_bytes(serialization.Encoding.PEM,
    serialization.PublicFormat.SubjectPublicKeyInfo))
EOF
cat > "$tmp/config.json" <<EOF
{"fleet_public_key": "fleet_pub.pem", "seed": 1, "max_executions": 4000000,
 "accounts": [{"id": "bench", "token": "bench-token", "refresh_token": "bench-refresh"}]}
EOF

tls_args=()
out=sim
if [ "$TLS" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$tmp/tls.key" -out "$tmp/tls.pem" -days 1 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 2>/dev/null
  tls_args=(--tls-cert "$tmp/tls.pem" --tls-key "$tmp/tls.key")
  out=sim-tls
fi
t0=$(date +%s%N)
"$BIN" --listen 127.0.0.1:0 --config "$tmp/config.json" --gen-vehicles "$CARS" \
  --log-level warn "${tls_args[@]}" > "$tmp/sim.out" &
pid=$!
for _ in $(seq 1 200); do grep -q "listening on" "$tmp/sim.out" 2>/dev/null && break; sleep 0.05; done
t1=$(date +%s%N)
url=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$tmp/sim.out")
[ -n "$url" ] || { echo "bench_sim: fleetsim did not start" >&2; exit 1; }
start_ms=$(( (t1 - t0) / 1000000 ))
rss_start=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
echo "fleetsim: $CARS cars up in ${start_ms} ms at $url, RSS ${rss_start} kB"

$PY perf/bench_sim_gen.py "$url" bench-token "$tmp/fleet.pem" "$CARS" "$ROUNDS" "$tmp/reqs.txt"
lines=$(wc -l < "$tmp/reqs.txt")

stat() { $PY -c "import json,ssl,urllib.request; j=json.load(urllib.request.urlopen('$url/sim/stats', context=ssl._create_unverified_context())); print(j['$1'])"; }
ok0=$(stat signed_ok); f0=$(stat signed_fault); e0=$(stat executions)
wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s perf/bench_sim.lua "$url" \
  -- "$tmp/reqs.txt" "$THREADS" bench-token | tee "$tmp/wrk.txt"
ok1=$(stat signed_ok); f1=$(stat signed_fault); e1=$(stat executions)
rss_end=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)

ok=$((ok1 - ok0)); faults=$((f1 - f0)); execs=$((e1 - e0))
wrk_rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.txt")
p50=$(awk '/ 50%/ {print $2}' "$tmp/wrk.txt"); p99=$(awk '/ 99%/ {print $2}' "$tmp/wrk.txt")
rate=$($PY -c "print(round($ok / $DURATION))")
host=$(uname -srm); cpus=$(nproc); when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
mkdir -p perf/results
{
  echo "fleetsim benchmark ($when, $host, $cpus CPUs shared by wrk and fleetsim, $( [ "$TLS" = 1 ] && echo HTTPS || echo HTTP))"
  echo "cars:                 $CARS (generated, started in ${start_ms} ms, RSS ${rss_start} kB)"
  echo "pre-signed commands:  $lines (INFOTAINMENT, distinct counters, real sessions)"
  echo "wrk:                  -t$THREADS -c$CONNS -d${DURATION}s keep-alive, $wrk_rps req/s, p50 $p50, p99 $p99"
  echo "verified + executed:  $ok in ${DURATION}s = $rate commands/s"
  echo "faults during run:    $faults (non-zero means the file ran out and replays were refused)"
  echo "execution log growth: $execs"
  echo "RSS after run:        ${rss_end} kB"
} | tee perf/results/$out.txt
cat > perf/results/$out.json <<EOF
{"when": "$when", "host": "$host", "tls": $TLS, "cpus": $cpus, "cars": $CARS, "startup_ms": $start_ms,
 "rss_start_kb": $rss_start, "rss_end_kb": $rss_end, "presigned": $lines,
 "wrk": {"threads": $THREADS, "connections": $CONNS, "duration_s": $DURATION,
         "req_per_s": $wrk_rps, "p50": "$p50", "p99": "$p99"},
 "verified_executed": $ok, "commands_per_s": $rate, "faults": $faults, "executions": $execs}
EOF
