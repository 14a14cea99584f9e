#!/usr/bin/env bash
# The whole benchmark suite in one command:
#
#   perf/run-all.sh            # full run, about 8-14 minutes
#   perf/run-all.sh --quick    # smaller counts, fewer points: 1-2 minutes
#
# Installs what it needs (wrk, redis-server, gnuplot-nox, libhiredis-dev via
# FQ_DEPS_PERF=1 scripts/deps.sh), builds a Release tree (FQ_PERF_BUILD,
# default build-perf), runs every benchmark on loopback and writes
# perf/RESULTS.md plus PNG plots under perf/results/.  Every row records the
# machine, the versions and the date.  Figures from a shared 2-core machine
# are noisy: compare rows of the same run, not runs of different days.
#
# Benchmarks, all in the same run:
#   1. durable ingest: fleetq (bench_ingest) against its ZeroMQ and LMDB
#      ceilings and against Redis 7 (appendfsync always, Lua SET NX + XADD
#      dedupe, bench_redis) at the same concurrency and pipelining;
#   2. ack and end-to-end latency versus offered load (fleetq-replay, open
#      loop, several rates);
#   3. fleetqd memory (RSS) and startup time with 10k, 100k and 1M stored
#      commands (--quick: 10k and 100k);
#   4. end to end: submit -> succeeded through fleetsim next to the
#      libcurl ceiling against the same simulator (bench_e2e, when built;
#      else the bare libcurl ceiling of bench_http);
#   5. the client packages' submit loops (Python blocking and asyncio,
#      Node): acknowledged submits/s against one fleetqd (bench_clients.py);
#   6. a 100,000-car campaign against fleetsim (--quick: 10,000): time to
#      accept and to finish and fleetqd's CPU per device command, next to
#      the same commands as plain submits (bench_campaign.py, about 3-4
#      minutes of the full run);
#   7. cluster mode (issue 18): 3 fleetqd nodes on a 3-node NATS JetStream
#      cluster next to one fleetqd, ingest and end to end, CPU per command
#      and the cost of replication (bench_cluster.py, about 4-5 minutes;
#      skipped when nats-server is missing or FQ_PERF_CLUSTER=0).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "run-all: unknown argument $a (see --help)" >&2; exit 2 ;;
  esac
done

BUILD=${FQ_PERF_BUILD:-$ROOT/build-perf}
OUT=$ROOT/perf/results
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
W=$(mktemp -d /tmp/fq-perf-XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  rm -rf "$W"
}
trap cleanup EXIT
say() { echo "run-all [$(( $(date +%s) - T0 )) s]: $*" >&2; }
T0=$(date +%s)

if [ "$QUICK" = 1 ]; then
  INGEST_COUNT=25000; ROUNDS=1
  LOAD_RATES="2000 10000 30000"; LOAD_SECS=2
  MEM_SIZES="10000 100000"
else
  INGEST_COUNT=100000; ROUNDS=3
  LOAD_RATES="1000 5000 10000 20000 40000 60000 80000"; LOAD_SECS=5
  MEM_SIZES="10000 100000 1000000"
fi
PRODUCERS=4; WINDOW=256; DEVICES=10000

# ---- dependencies and build ----------------------------------------------
FQ_DEPS_PERF=1 "$ROOT/scripts/deps.sh"
say "building Release in $BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DFQ_WERROR=OFF >"$W/cmake.log" 2>&1 ||
  { cat "$W/cmake.log" >&2; exit 1; }
TARGETS="fleetqd fleetq fleetq-replay bench_ingest bench_redis"
for t in fleetsim bench_e2e bench_http; do
  grep -q "^$t:" "$BUILD/Makefile" 2>/dev/null && TARGETS="$TARGETS $t"
done
# shellcheck disable=SC2086
cmake --build "$BUILD" -j2 --target $TARGETS >"$W/build.log" 2>&1 ||
  { tail -40 "$W/build.log" >&2; exit 1; }
BIN=$BUILD/bin

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ---- the machine ---------------------------------------------------------
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "host=$(uname -srm)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') x $(nproc)"
  echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "fs=$(df -T /tmp | awk 'NR==2 {print $2}') (/tmp, data dirs)"
  echo "fleetq=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
  echo "cc=$(cc --version | head -1)"
  echo "libzmq=$(pkg-config --modversion libzmq)"
  echo "lmdb=$(pkg-config --modversion lmdb)"
  echo "msgpack=$(pkg-config --modversion msgpack)"
  echo "redis=$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
  echo "hiredis=$(pkg-config --modversion hiredis 2>/dev/null || echo none)"
  echo "quick=$QUICK"
} >"$W/machine.env"
cat "$W/machine.env" >&2

# ---- a fleetqd of our own -------------------------------------------------
# start_daemon DATA_DIR -> sets DPID, EP, PUB; waits for "fleetqd: ready".
# --no-dispatch: these benchmarks measure ingest, so nothing is sent to a
# Fleet API (the commands stay queued); section 4 (bench_e2e) dispatches.
start_daemon() {
  local data=$1 log=$1.log
  EP="tcp://127.0.0.1:$(free_port)"
  PUB="tcp://127.0.0.1:$(free_port)"
  # Its metrics (the per-commit breakdown, perf/batch_stats.py).
  MPORT=$(free_port)
  # TRACE=1: the shards log their average batch size, processing and
  # commit times (FQ_TRACE, read by src/daemon/shard.c) every 200 batches.
  env ${TRACE:+FQ_TRACE=1} "$BIN/fleetqd" --data "$data" --listen "$EP" --publish "$PUB" \
    --log-level warn --default-ttl-ms 86400000 --no-dispatch \
    --metrics "127.0.0.1:$MPORT" 2>"$log" &
  DPID=$!
  PIDS+=($DPID)
}
wait_ping() {
  for _ in $(seq 2000); do
    "$BIN/fleetq" ping --endpoint "$EP" --timeout 0.2 >/dev/null 2>&1 && return 0
    kill -0 "$DPID" 2>/dev/null || { echo "fleetqd exited" >&2; return 1; }
  done
  return 1
}
# fleetqd refuses submits for accounts it does not have (unknown_account):
# add the one fleetq-replay's traffic names (its default, replay-acct), with
# an opaque token and a loopback base URL where nothing listens.  Kept in the
# data directory across a restart.
add_replay_account() {
  local tok="$W/replay-acct.token"
  (umask 077; echo "bench-opaque-token" >"$tok")
  echo "bench-refresh-token" | "$BIN/fleetq" account add --endpoint "$EP" \
    --account replay-acct --client-id bench --base-url http://127.0.0.1:9 \
    --access-token-file "$tok" --refresh-token-file - >/dev/null
}
stop_daemon() {
  kill -TERM "$DPID" 2>/dev/null || true
  wait "$DPID" 2>/dev/null || true
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# CPU time (user + system) of a process so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
# Copy a benchmark's output, adding after its first "round" line the CPU
# time the server process PID used until then: the maximum-throughput
# phase (the ceilings that follow in the same round do not touch the
# server; the half-load run comes after the line).
server_cpu() {
  local pid=$1 c0 line done=0
  c0=$(cpu_ticks "$pid")
  while IFS= read -r line; do
    echo "$line"
    if [ "$done" = 0 ] && [ "${line#round}" != "$line" ]; then
      echo "server_cpu_s=$(( $(cpu_ticks "$pid") - c0 ))/$TICK"
      done=1
    fi
  done
}

# ---- 1. durable ingest: fleetq, ceilings, Redis ----------------------------
# Paired rounds: each round runs fleetq (with its two ceilings) and then
# Redis, back to back, so that background load on a shared machine hits
# both alike; the report gives the medians and the median of the per-round
# ratios.
say "1/4 durable ingest: fleetq, ZeroMQ and LMDB ceilings, Redis; $ROUNDS paired rounds"
# bench_ingest takes ports 20000-40002 (from its pid): keep Redis above.
RPORT=$(free_port)
while [ "$RPORT" -le 40010 ]; do RPORT=$(free_port); done
mkdir -p "$W/redis"
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$W/redis" --appendonly yes \
  --appendfsync always --save '' --daemonize no --logfile "$W/redis/log" &
PIDS+=($!)
REDIS_PID=$!
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$W/machine.env"
for r in $(seq "$ROUNDS"); do
  say "  round $r/$ROUNDS: fleetq (bench_ingest)"
  # bench_ingest derives its ports from its pid; on a busy machine one may
  # be taken, so try again (a new pid, new ports).
  # Our own fleetqd (free ports), so that its CPU time can be read; the
  # echo ROUTER of the ZeroMQ ceiling takes a port derived from
  # bench_ingest's pid, which a busy machine may hold: then try again.
  for try in 1 2 3; do
    TRACE=1 start_daemon "$W/ingest-data-$r-$try"
    wait_ping
    ok=1
    "$BIN/bench_ingest" --endpoint "$EP" --producers $PRODUCERS --window $WINDOW \
      --count $INGEST_COUNT --devices $DEVICES --rounds 1 --out "$W/ingest-$r.md" \
      2>"$W/ingest-$r.err" | server_cpu "$DPID" >"$W/ingest-$r.txt" || ok=0
    stop_daemon
    grep 'trace:' "$W/ingest-data-$r-$try.log" >"$W/ingest-$r.trace" || true
    rm -rf "$W/ingest-data-$r-$try"
    [ "$ok" = 1 ] && break
    say "  bench_ingest failed (try $try): $(tail -1 "$W/ingest-$r.err")"
    [ "$try" = 3 ] && exit 1
  done
  grep -E '^round|^half' "$W/ingest-$r.txt" >&2
  say "  round $r/$ROUNDS: Redis (bench_redis)"
  "$BIN/bench_redis" --port "$RPORT" --script "$ROOT/perf/redis_dedupe.lua" \
    --producers $PRODUCERS --window $WINDOW --count $INGEST_COUNT --devices $DEVICES \
    --rounds 1 | server_cpu "$REDIS_PID" >"$W/redis-$r.txt"
  # Redis rewrites its AOF in the background (fork, new base file) as it
  # grows: the default configuration, counted so rounds can be compared.
  redis-cli -p "$RPORT" info persistence | tr -d '\r' | grep -E '^aof_rewrites:' \
    >>"$W/redis-$r.txt" || true
  grep -E '^round|^half' "$W/redis-$r.txt" >&2
done
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$W/machine.env"
redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || kill "$REDIS_PID" 2>/dev/null || true
wait "$REDIS_PID" 2>/dev/null || true

# ---- 1b. CURVE against plaintext --------------------------------------------
# bench_ingest --curve starts its own two fleetqd (plaintext, CURVE) and
# loads them alternately in each round: the ratio of the same round.
say "1b CURVE vs plaintext ingest (bench_ingest --curve), $ROUNDS round(s)"
"$BIN/bench_ingest" --curve --producers $PRODUCERS --window $WINDOW --count $((INGEST_COUNT / 2)) \
  --devices $DEVICES --rounds "$ROUNDS" --out "$W/curve.md" >"$W/curve.txt" 2>"$W/curve.err" ||
  say "  bench_ingest --curve failed: $(tail -2 "$W/curve.err")"
grep -E '^CURVE' "$W/curve.txt" >&2 || true

# ---- 2. latency versus offered load ---------------------------------------
say "2/4 latency versus offered load: $LOAD_RATES /s, $LOAD_SECS s each"
MAXRATE=0
for r in $LOAD_RATES; do [ "$r" -gt "$MAXRATE" ] && MAXRATE=$r; done
"$BIN/fleetq-replay" gen --out "$W/load.fqt" --count $((MAXRATE * LOAD_SECS)) \
  --devices $DEVICES --rate "$MAXRATE" --seed 1 --ttl-ms 86400000 2>>"$W/gen.log"
# Redis at the same rates, right after fleetq at each (same run, same
# moment's background load): the open-loop mode of bench_redis.
mkdir -p "$W/redis2"
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$W/redis2" --appendonly yes \
  --appendfsync always --save '' --daemonize no --logfile "$W/redis2/log" &
PIDS+=($!)
REDIS_PID=$!
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
start_daemon "$W/load-data"
wait_ping
add_replay_account
MURL="http://127.0.0.1:$MPORT/metrics"
for r in $LOAD_RATES; do
  "$PY" "$ROOT/perf/batch_stats.py" snap "$MURL" "$W/m0-$r" || true
  c0=$(cpu_ticks "$DPID")
  "$BIN/fleetq-replay" run "$W/load.fqt" --endpoint "$EP" --publish "$PUB" --rate "$r" \
    --duration "$LOAD_SECS" --conns 4 --key-prefix "r$r-" --drain 10 --json \
    >"$W/load-$r.json" 2>>"$W/load.log" || true
  echo "server_cpu_s=$(( $(cpu_ticks "$DPID") - c0 ))/$TICK" >"$W/load-$r.cpu"
  { "$PY" "$ROOT/perf/batch_stats.py" snap "$MURL" "$W/m1-$r" &&
    "$PY" "$ROOT/perf/batch_stats.py" diff "$W/m0-$r" "$W/m1-$r" "$W/load-$r.json" \
      >"$W/batch-$r.json"; } || true
  c0=$(cpu_ticks "$REDIS_PID")
  "$BIN/bench_redis" --port "$RPORT" --script "$ROOT/perf/redis_dedupe.lua" \
    --producers 4 --devices $DEVICES --rate "$r" --seconds "$LOAD_SECS" \
    >"$W/redis-load-$r.txt" 2>>"$W/load.log" || true
  echo "server_cpu_s=$(( $(cpu_ticks "$REDIS_PID") - c0 ))/$TICK" >>"$W/redis-load-$r.txt"
  "$PY" - "$W/load-$r.json" "$W/batch-$r.json" "$W/redis-load-$r.txt" <<'EOF' >&2
import json, re, sys
j = json.load(open(sys.argv[1]))
a = j["ack_latency_ms"]
try:
    b = json.load(open(sys.argv[2]))
    bt = (f"; batches {b['batches_per_s']}/s of {b['mean_batch']} (p99 {b['p99_batch']}), "
          f"process {b['mean_process_ms']} ms, commit {b['mean_commit_ms']} ms (p99 <= "
          f"{b['p99_commit_ms']}), shard busy {b['shard_busy']}")
except (OSError, ValueError, KeyError):
    bt = ""
m = re.search(r"OPENLOOP .*? rate=(\S+) p50=(\S+) p90=\S+ p99=(\S+)", open(sys.argv[3]).read())
rd = f" | Redis achieved {m.group(1)}/s p50 {m.group(2)} p99 {m.group(3)} ms" if m else ""
print(f"  offered {j['target_rate']:.0f}/s: fleetq achieved {j['rate']:.0f}/s, ack p50 {a['p50']} "
      f"p99 {a['p99']} p99.9 {a['p999']} ms, errors {sum(j['errors'].values())}{bt}{rd}")
EOF
done
stop_daemon
redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || kill "$REDIS_PID" 2>/dev/null || true
wait "$REDIS_PID" 2>/dev/null || true

# ---- 3. memory and startup with stored commands ---------------------------
say "3/4 memory and startup with $MEM_SIZES stored commands"
: >"$W/memory.tsv"
for n in $MEM_SIZES; do
  "$BIN/fleetq-replay" gen --out "$W/fill.fqt" --count "$n" --devices $DEVICES --uniform \
    --seed 2 --ttl-ms 86400000 --key-prefix "m$n" 2>>"$W/gen.log"
  start_daemon "$W/mem-$n"
  wait_ping
  add_replay_account
  rss_empty=$(rss_kb "$DPID")
  t1=$(date +%s%N)
  "$BIN/fleetq-replay" run "$W/fill.fqt" --endpoint "$EP" --max-inflight 256 --conns 4 \
    --drain 30 --json >"$W/fill-$n.json" 2>>"$W/fill.log" || true
  t2=$(date +%s%N)
  acked=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["acked"])' "$W/fill-$n.json")
  rss_full=$(rss_kb "$DPID")
  stop_daemon
  disk=$(du -sk "$W/mem-$n" | cut -f1)
  t3=$(date +%s%N)
  start_daemon "$W/mem-$n"
  # Ready line, first ping (answered by the ingress thread alone) and first
  # `get` of a stored command (answered by its shard): startup is the last.
  start_ms=$("$PY" - "$t3" "$W/mem-$n.log" "$EP" "m$n-$((n - 1))" <<'EOF'
import sys, time, msgpack, zmq
t0, log, ep, key = int(sys.argv[1]) / 1e9, sys.argv[2], sys.argv[3], sys.argv[4]
deadline = time.time() + 300
while b"fleetqd: ready" not in open(log, "rb").read() and time.time() < deadline:
    time.sleep(0.001)
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.setsockopt(zmq.RECONNECT_IVL, 2)
s.connect(ep)
s.send(msgpack.packb({"op": "get", "tenant": "replay", "key": key}))
ok = False
while time.time() < deadline and not ok:
    if s.poll(100):
        ok = msgpack.unpackb(s.recv(), raw=False).get("ok", False)
        if not ok:
            s.send(msgpack.packb({"op": "get", "tenant": "replay", "key": key}))
print(round((time.time() - t0) * 1000) if ok else -1)
EOF
)
  wait_ping
  sleep 1
  rss_restart=$(rss_kb "$DPID")
  stop_daemon
  fill_s=$(( (t2 - t1) / 1000000 ))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$acked" "$fill_s" "$rss_empty" "$rss_full" \
    "$rss_restart" "$start_ms" "$disk" >>"$W/memory.tsv"
  say "  $n commands (acked $acked, fill ${fill_s} ms): RSS empty ${rss_empty} kB, filled ${rss_full} kB, after restart ${rss_restart} kB; restart until a stored command is served ${start_ms} ms; data ${disk} kB"
  rm -rf "$W/mem-$n" "$W/fill.fqt"
done

# ---- 4. end to end through fleetsim, and the libcurl ceiling ---------------
: >"$W/http.txt"
: >"$W/e2e.txt"
if [ -x "$BIN/bench_e2e" ] && [ -x "$BIN/fleetsim" ]; then
  say "4/4 end to end: submit -> succeeded through fleetsim, next to the libcurl ceiling (bench_e2e)"
  if [ "$QUICK" = 1 ]; then E2E_ARGS="--quick"; else E2E_ARGS="--rounds 3 --duration 8"; fi
  # shellcheck disable=SC2086
  "$BIN/bench_e2e" $E2E_ARGS --out "$W/e2e.md" >"$W/e2e.txt" 2>"$W/e2e.err" ||
    say "  bench_e2e reported failures: $(tail -2 "$W/e2e.err")"
  if [ -s "$W/e2e.md" ]; then cp "$W/e2e.md" "$ROOT/perf/results/e2e.md"; fi
  grep -E '^median' "$W/e2e.txt" >&2 || true
elif [ -x "$BIN/bench_http" ]; then
  say "4/4 libcurl ceiling (bench_http); bench_e2e not built: end to end pending"
  if [ "$QUICK" = 1 ]; then HREQ=20000; HR=1; else HREQ=100000; HR=3; fi
  "$BIN/bench_http" --requests $HREQ --rounds $HR --out "$W/http.md" >"$W/http.txt" 2>&1 || true
  tail -1 "$W/http.txt" >&2
else
  say "4/4 neither bench_e2e nor bench_http built: end to end skipped"
fi

say "5 client packages: pipelined submit loops against one fleetqd (bench_clients.py)"
"$PY" "$ROOT/perf/bench_clients.py" --bin "$BIN" --out "$OUT/clients.md" \
  $([ "$QUICK" = 1 ] && echo --quick) >"$W/clients.txt" 2>"$W/clients.err" ||
  say "  bench_clients failed: $(tail -3 "$W/clients.err")"
grep '^RESULT' "$W/clients.txt" >&2 || true

say "6 campaign: $([ "$QUICK" = 1 ] && echo 10,000 || echo 100,000) cars against fleetsim, next to plain submits (bench_campaign.py)"
"$PY" "$ROOT/perf/bench_campaign.py" --bin "$BIN" --out "$OUT/campaign.md" \
  $([ "$QUICK" = 1 ] && echo --quick) >"$W/campaign.txt" 2>"$W/campaign.err" ||
  say "  bench_campaign failed: $(tail -3 "$W/campaign.err")"
grep '^RESULT' "$W/campaign.txt" >&2 || true

: >"$W/cluster.txt"
if [ "${FQ_PERF_CLUSTER:-1}" != 0 ] && command -v nats-server >/dev/null; then
  say "7 cluster: 3 nodes on NATS JetStream next to one node, ingest and end to end (bench_cluster.py)"
  "$PY" "$ROOT/perf/bench_cluster.py" --bin "$BIN" --out "$OUT/cluster" \
    $([ "$QUICK" = 1 ] && echo --quick) >"$W/cluster.txt" 2>"$W/cluster.err" ||
    say "  bench_cluster failed: $(tail -3 "$W/cluster.err")"
  grep '^RESULT' "$W/cluster.txt" >&2 || true
else
  say "7 cluster: skipped (no nats-server, or FQ_PERF_CLUSTER=0)"
fi

# ---- results --------------------------------------------------------------
say "writing perf/RESULTS.md and plots"
ELAPSED=$(( $(date +%s) - T0 ))
"$PY" - "$W" "$OUT" "$ROOT/perf/RESULTS.md" "$ELAPSED" "$LOAD_RATES" "$PRODUCERS" "$INGEST_COUNT" <<'EOF'
import json, os, re, sys
W, OUT, MD, ELAPSED, RATES = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
PRODUCERS, COUNT = int(sys.argv[6]), int(sys.argv[7])
env = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(W, "machine.env")) if "=" in l)
quick = env.get("quick") == "1"
run = (f"{env['date']}; {env['cpu']}, {env['mem']}, {env['fs']}; fleetq {env['fleetq']}")
tag = (f"{env['date'][:16]}; {env['cpu']}; fleetq {env['fleetq']}, libzmq {env['libzmq']}, "
       f"LMDB {env['lmdb']}, Redis {env['redis']}")

def num(pat, text, cast=float):
    m = re.search(pat, text)
    return cast(m.group(1)) if m else None

def median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else None

pairs = []
for r in range(1, 100):
    fi, fr = os.path.join(W, f"ingest-{r}.txt"), os.path.join(W, f"redis-{r}.txt")
    if not os.path.exists(fi):
        break
    ing = open(fi).read()
    red = open(fr).read() if os.path.exists(fr) else ""
    p = {"r": r, "md": os.path.join(W, f"ingest-{r}.md")}
    p["fq"] = num(r"median: fleetq (\d+) acks/s", ing)
    p["zmq"] = num(r"zmq ceiling (\d+) msg/s", ing)
    p["lmdb"] = num(r"lmdb ceiling (\d+) puts/s", ing)
    m = re.search(r"round \d+: fleetq \d+ acks/s \(p50 ([\d.]+) p99 ([\d.]+) p99.9 ([\d.]+) ms", ing)
    p["fq_lat"] = m.groups() if m else ("?",) * 3
    m = re.search(r"(?:half load|open loop): offered (\d+)/s achieved (\d+) acks/s, p50 ([\d.]+) p99 ([\d.]+) p99.9 ([\d.]+) max ([\d.]+)", ing)
    p["fq_half"] = m.groups() if m else ("?",) * 6
    hdr = re.search(r"msg (\d+) B", ing)
    p["msg"] = hdr.group(1) if hdr else "?"
    p["rr"] = dict(kv.split("=") for kv in re.search(r"RESULT (.*)", red).group(1).split()) if "RESULT" in red else {}
    p["redis"] = float(p["rr"].get("rate", 0)) or None
    m = re.search(r"aof_rewrites:(\d+)", red)
    p["aof"] = int(m.group(1)) if m else None
    # Server CPU per acknowledged request in the maximum-throughput phase.
    def cpu_us(text):
        m = re.search(r"server_cpu_s=(\d+)/(\d+)", text)
        return int(m.group(1)) / int(m.group(2)) / (PRODUCERS * COUNT) * 1e6 if m else None
    p["fq_cpu"] = cpu_us(ing)
    p["redis_cpu"] = cpu_us(red)
    # Shard batches of the maximum-throughput phase: the trace lines whose
    # average batch is at least half the largest (the half-load run that
    # follows commits much smaller batches).
    tr = []
    tf = os.path.join(W, f"ingest-{r}.trace")
    if os.path.exists(tf):
        for l in open(tf):
            m = re.search(r"avg batch (\d+), process (\d+) us, commit (\d+) us", l)
            if m:
                tr.append(tuple(int(x) for x in m.groups()))
    if tr:
        top = max(t[0] for t in tr)
        big = [t for t in tr if t[0] >= top / 2]
        p["trace"] = tuple(sum(t[k] for t in big) / len(big) for k in range(3))
    else:
        p["trace"] = None
    pairs.append(p)
fq_rate = median([p["fq"] for p in pairs])
# A ceiling of 0 means that phase failed (bench_ingest's echo ROUTER could
# not bind its port): leave it out.
zmq_rate = median([p["zmq"] for p in pairs if p["zmq"]]) or 0
lmdb_rate = median([p["lmdb"] for p in pairs if p["lmdb"]]) or 0
redis_rate = median([p["redis"] for p in pairs if p["redis"]])
ratios = [p["fq"] / p["redis"] for p in pairs if p["redis"]]
pair_ratio = median(ratios)
fqp = next(p for p in pairs if p["fq"] == fq_rate)
rdp = next((p for p in pairs if p["redis"] == redis_rate), None)
fq_lat, fq_half, msg_size = fqp["fq_lat"], fqp["fq_half"], fqp["msg"]
rr = rdp["rr"] if rdp else {}
import shutil
shutil.copy(fqp["md"], os.path.join(OUT, "ingest.md"))

L = []
w = L.append
w("# fleetq benchmark results\n")
w(f"Written by `perf/run-all.sh{' --quick' if quick else ''}` in {ELAPSED} s. Run: {run}.")
w(f"Versions: {env['cc']}; libzmq {env['libzmq']}, LMDB {env['lmdb']}, msgpack-c {env['msgpack']}, "
  f"Redis {env['redis']} (Debian), hiredis {env['hiredis']}; {env['host']}.\n")
w("The machine is a shared 2-core VM: other work ran beside the benchmarks, so single figures "
  "move by 10-30 % between runs. Compare rows of the same run (they are), not runs of different "
  "days. Every benchmark talks over loopback to processes on the same two cores, so client and "
  "server compete for CPU: absolute figures are lower bounds for a real deployment.\n")

SUMMARY_AT = len(L)
w("## 1. Durable ingest\n")
w(f"Workload (the same for every row): 4 producer connections, each pipelining up to 256 "
  f"submits (closed loop), `set_charge_limit` on one of 10,000 cars, unique idempotency keys, "
  f"message {msg_size} bytes, {'100,000' if quick else '400,000'} submits per round; an "
  f"acknowledgement means the command is on disk (fsync) and its key deduplicated. "
  f"{len(pairs)} paired rounds: fleetq (with its ceilings) then Redis, back to back, so that "
  f"background load hits both alike. Median of the rounds; latency of the median round. Then "
  f"open loop at half the measured maximum, latency from the intended send time.\n")
fq_cpu = median([p["fq_cpu"] for p in pairs if p["fq_cpu"]])
redis_cpu = median([p["redis_cpu"] for p in pairs if p["redis_cpu"]])
cpu = lambda v: "-" if v is None else f"{v:.1f}"
w("| system | acks/s | server CPU us per ack | ack p50 / p99 / p99.9 ms at max | half load: achieved/s, p50 / p99 / p99.9 / max ms | vs fleetq | run |")
w("|---|---|---|---|---|---|---|")
w(f"| fleetq (fleetqd, LMDB group commit, fsync) | {fq_rate:.0f} | {cpu(fq_cpu)} | {' / '.join(fq_lat)} | "
  f"{fq_half[1]}, {' / '.join(fq_half[2:])} | 1.00 | {tag} |")
if redis_rate:
    w(f"| Redis {env['redis']}, appendfsync always, Lua SET NX + XADD | {redis_rate:.0f} | {cpu(redis_cpu)} | "
      f"{rr['p50']} / {rr['p99']} / {rr['p999']} | {rr['half_rate']}, {rr['half_p50']} / "
      f"{rr['half_p99']} / {rr['half_p999']} / {rr['half_max']} | {redis_rate / fq_rate:.2f} | {tag} |")
zmq_n = sum(1 for p in pairs if p["zmq"])
w(f"| ceiling: ZeroMQ DEALER/ROUTER echo, same messages{'' if zmq_n == len(pairs) else f' ({zmq_n} of {len(pairs)} rounds measured)'} | {zmq_rate:.0f} | - | - | - | {zmq_rate / fq_rate:.2f} | {tag} |")
w(f"| ceiling: LMDB puts, batches of 1000 x 600 B, fsync per batch | {lmdb_rate:.0f} | - | - | - | {lmdb_rate / fq_rate:.2f} | {tag} |")
w("")
w("Server CPU per ack: user + system time of the server process (fleetqd with all its "
  "threads; redis-server) during the maximum-throughput phase, divided by the requests it "
  "acknowledged there. It depends much less than throughput on what else runs on the machine.")
w("")
if pairs:
    cu = lambda v: "-" if v is None else f"{v:.1f}"
    w("Per round (acks/s, server CPU us per ack): " + "; ".join(
        f"{p['r']}: fleetq {p['fq']:.0f} ({cu(p['fq_cpu'])} us), Redis {p['redis'] or 0:.0f} "
        f"({cu(p['redis_cpu'])} us)"
        + (f", {p['fq'] / p['redis']:.2f}x" if p['redis'] else "") for p in pairs) + ".")
    aofs = [p["aof"] for p in pairs if p["aof"] is not None]
    if aofs:
        per = [b - a for a, b in zip([0] + aofs[:-1], aofs)]
        w(f"Redis' background AOF rewrites (default auto-aof-rewrite settings) per round: "
          f"{', '.join(str(x) for x in per)}.")
        rp = [(x, p["redis"]) for x, p in zip(per, pairs) if p["redis"]]
        if len(rp) > 1 and max(x for x, _ in rp) > min(x for x, _ in rp):
            most = max(rp, key=lambda t: t[0])
            if most[1] == min(r for _, r in rp):
                w("Redis' slowest round was the one with the most AOF rewrites (each forks and "
                  "writes a new base file while the clients wait on the same disk): a Redis "
                  "that has been running for a while rewrites less often than one that starts "
                  "empty, as here.")
    w("")
if redis_rate:
    ratio = pair_ratio
    if ratio >= 1.5:
        w(f"**fleetq's durable ingest is {ratio:.2f}x Redis'** on the same workload (median of "
          f"the per-round ratios; goal: at least 1.5x): met.\n")
    else:
        w(f"**fleetq's durable ingest is {ratio:.2f}x Redis'** on the same workload (median of "
          f"the per-round ratios): short of the 1.5x goal by {(1.5 - ratio) / 1.5 * 100:.0f} %.\n")
cpu_txt = ""
if fq_cpu and redis_cpu:
    k = fq_cpu / redis_cpu
    cpu_txt = (f"Server CPU per ack was {fq_cpu:.1f} us for fleetqd (all threads) and "
               f"{redis_cpu:.1f} us for redis-server: fleetqd spent "
               + ("about as much CPU per request as Redis. " if 0.8 <= k <= 1.25 else
                  f"{k:.1f}x the CPU per request that Redis did. " if k > 1 else
                  f"{1 / k:.1f}x less CPU per request than Redis. "))
tr_txt = ""
t = fqp.get("trace")
if t:
    b_, pr, cm = t
    bound = 2 * b_ / ((pr + cm) / 1e6)
    tr_txt = (f"In fleetq's median round each shard committed batches of about {b_:.0f} requests, "
              f"spending {pr / 1000:.1f} ms processing a batch ({pr / b_:.1f} us per request: "
              f"dedupe, request hash, LMDB puts of the command, its queue entry and its status "
              f"event, the event packing) and then {cm / 1000:.1f} ms in the LMDB commit with its "
              f"fsync, one after the other. Two shards doing that back to back give about "
              f"{bound:.0f} acks/s (measured in that round: {fq_rate:.0f}): with a fixed number "
              f"of requests in flight (4 x 256), fleetq's throughput is the batch size divided by "
              f"the batch latency (processing + commit). Redis answers a whole event-loop "
              f"iteration after one AOF write and fdatasync. ")
w("**Why.** Both servers make a reply wait for fsync and both group commit: fleetqd's shard "
  "threads put every request that arrived while the previous batch was committing into one "
  "LMDB write transaction, Redis with `appendfsync always` writes and fsyncs its AOF once per "
  "event-loop iteration, before answering the clients served in it. " + tr_txt + cpu_txt +
  "fleetq spreads its work over threads (ingress, one per shard, the ZeroMQ I/O thread) where "
  "Redis runs all of it on one, so it gains from idle cores; this machine has two, shared by "
  "the server, the four benchmark client threads and the other engineers' builds and tests "
  f"(load average {env.get('load_before', '?').split()[0]} before the ingest rounds, "
  f"{env.get('load_after', '?').split()[0]} after), and the disk is shared too: fsync and "
  "commit times, and so both servers' throughput, moved by several times between rounds (see "
  "the per-round figures). The ways to raise fleetq's figure are visible above: less "
  "processing per request in the shard, a commit that costs less than LMDB's (LMDB writes "
  "its pages and then its meta page, two syncs), and processing the next batch while the "
  "previous one commits. The ZeroMQ ceiling is what loopback messaging alone allows with the "
  "same producers; the LMDB ceiling is one writer doing batched puts with fsync.\n")
w("![durable ingest](results/ingest.png)\n")
with open(os.path.join(OUT, "ingest.dat"), "w") as f:
    f.write(f'"fleetq" {fq_rate:.0f}\n')
    if redis_rate:
        f.write(f'"Redis (fsync always)" {redis_rate:.0f}\n')
    f.write(f'"ZeroMQ ceiling" {zmq_rate:.0f}\n"LMDB ceiling" {lmdb_rate:.0f}\n')

w("## 2. Latency versus offered load\n")
w("`fleetq-replay run --rate R` against one fleetqd (default shards), 4 DEALER connections, "
  "open loop: each request is sent at its intended time whatever happened before, and latency "
  "counts from that intended time. Synthetic traffic (`fleetq-replay gen`, seed 1, default "
  "command mix, Zipf 1.0 over 10,000 cars), a fresh key prefix per rate. Right after fleetq at "
  "each rate, Redis (appendfsync always, the Lua dedupe script) at the same rate, open loop, 4 "
  "connections (`bench_redis --rate R`): the same moment's background load for both. "
  "End-to-end is measured to the command's `queued` event on the status stream (nothing is "
  "dispatched in this setup).\n")
w("| offered/s | fleetq achieved/s | ack p50 | p90 | p99 | p99.9 | max ms | Redis achieved/s | Redis p50 | p99 ms | fleetq p99 <= Redis p99 | server CPU us/ack fleetqd / Redis | e2e (queued) p50 / p99 ms |")
w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
curve = []  # (rate, fleetq p99, redis p99)
bw = []
fmt = lambda v: "-" if v is None else f"{v:.2f}"
def cpu_per(path, acked):
    try:
        m = re.search(r"server_cpu_s=(\d+)/(\d+)", open(path).read())
    except OSError:
        return None
    return int(m.group(1)) / int(m.group(2)) / acked * 1e6 if m and acked else None
with open(os.path.join(OUT, "latency.dat"), "w") as f:
    f.write("# offered achieved p50 p90 p99 p999 max e2e_p50 e2e_p99 redis_p50 redis_p99 "
            "mean_batch mean_commit_ms\n")
    for r in RATES.split():
        try:
            j = json.load(open(os.path.join(W, f"load-{r}.json")))
        except (OSError, ValueError):
            w(f"| {r} | run failed | | | | | | | | | | | |")
            continue
        a, e = j["ack_latency_ms"], j["e2e_latency_ms"]
        rd = {}
        try:
            t = open(os.path.join(W, f"redis-load-{r}.txt")).read()
            m = re.search(r"OPENLOOP (.*)", t)
            if m:
                rd = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
        except OSError:
            pass
        try:
            b = json.load(open(os.path.join(W, f"batch-{r}.json")))
        except (OSError, ValueError):
            b = {}
        bw.append((r, b))
        fq_c = cpu_per(os.path.join(W, f"load-{r}.cpu"), j.get("acked"))
        rd_c = cpu_per(os.path.join(W, f"redis-load-{r}.txt"), rd.get("acked"))
        ok = "-"
        if a["p99"] is not None and rd.get("p99") is not None:
            curve.append((int(r), a["p99"], rd["p99"]))
            ok = "yes" if a["p99"] <= rd["p99"] else "no"
        w(f"| {float(r):.0f} | {j['rate']:.0f} | {fmt(a['p50'])} | {fmt(a['p90'])} | "
          f"{fmt(a['p99'])} | {fmt(a['p999'])} | {fmt(a['max'])} | "
          f"{rd.get('rate', 0):.0f} | {fmt(rd.get('p50'))} | {fmt(rd.get('p99'))} | {ok} | "
          f"{fmt(fq_c)} / {fmt(rd_c)} | {fmt(e['p50'])} / {fmt(e['p99'])} |")
        if a["p50"] is not None:
            nan = lambda v: "NaN" if v is None else v
            f.write(f"{r} {j['rate']:.0f} {a['p50']} {a['p90']} {a['p99']} {a['p999']} {a['max']} "
                    f"{nan(e['p50'])} {nan(e['p99'])} {nan(rd.get('p50'))} {nan(rd.get('p99'))} "
                    f"{nan(b.get('mean_batch'))} {nan(b.get('mean_commit_ms'))}\n")
w("")
w(f"Run: {tag}.\n")
w("![latency versus offered load, fleetq and Redis](results/latency.png)\n")
w("### Where an ack waits: the shards' group commits at each rate\n")
w("From fleetqd's own metrics (`--metrics`, scraped before and after each rate; "
  "`perf/batch_stats.py`): group commits per second (all shards), requests per commit, wall "
  "time processing a batch before its commit and in the commit itself (LMDB page writes, "
  "fdatasync, meta page, fdatasync), each shard's utilization (busy wall time per second of "
  "sending; at overload it includes working off the backlog after the sending stopped), and "
  "the server's own ack time (shard receipt -> ack sent; histogram bucket bounds, so "
  "'<= x').\n")
w("| offered/s | commits/s | requests per commit, mean / p99 <= | process ms mean | commit ms mean / p50 <= / p99 <= | shard busy | server ack p50 <= / p99 <= ms |")
w("|---|---|---|---|---|---|---|")
for r, b in bw:
    if not b:
        w(f"| {r} | no metrics | | | | | |")
        continue
    busy = ", ".join(f"{v:.2f}" for _, v in sorted(b["shard_busy"].items()))
    p99b = "> 4096" if b["p99_batch"] is None else f"{b['p99_batch']:.0f}"
    w(f"| {r} | {b['batches_per_s']} | {b['mean_batch']} / {p99b} | "
      f"{b['mean_process_ms']} | {b['mean_commit_ms']} / {b['p50_commit_ms']} / {b['p99_commit_ms']} | "
      f"{busy} | {b['server_ack_p50_ms']} / {b['server_ack_p99_ms']} |")
w("")

# The issue-17 findings: hand-written (perf/findings-17.md), with the
# measurements they come from; kept as they are by every run.
fnd = os.path.join(os.path.dirname(MD), "findings-17.md")
if os.path.exists(fnd):
    w(open(fnd).read().replace("\n## ", "\n### ").replace("## ", "### ", 1))
w("## 3. Memory and startup with stored commands\n")
w("A fresh fleetqd is filled with N queued commands (`fleetq-replay run --max-inflight 256`, "
  "closed loop, ttl 24 h so nothing expires, uniform over 10,000 cars), stopped with SIGTERM and "
  "started again on the same data; startup is the time from exec until a `get` of the last "
  "stored command is answered by its shard (so it includes opening the stores and loading the "
  "in-memory dedupe table and device queues: from the restart snapshot the clean stop wrote, "
  "`shard-N/restart.snap`; without one, as after a kill -9, they are rebuilt from LMDB, "
  "1.2-1.9 s at 1M commands, see the issue-17 findings). RSS from /proc.\n")
w("| stored commands | acked | fill rate/s | RSS empty MB | RSS filled MB | RSS after restart MB | restart until served ms | data on disk MB | run |")
w("|---|---|---|---|---|---|---|---|---|")
with open(os.path.join(OUT, "memory.dat"), "w") as f:
    f.write("# commands rss_filled_mb rss_restart_mb startup_ms disk_mb\n")
    for line in open(os.path.join(W, "memory.tsv")):
        n, acked, fill_ms, e0, e1, e2, st, disk = line.split()
        mb = lambda k: f"{int(k) / 1024:.1f}"
        rate = int(acked) / (int(fill_ms) / 1000) if int(fill_ms) else 0
        w(f"| {int(n):,} | {acked} | {rate:.0f} | {mb(e0)} | {mb(e1)} | {mb(e2)} | {st} | {mb(disk)} | {tag} |")
        f.write(f"{n} {mb(e1)} {mb(e2)} {st} {mb(disk)}\n")
w("")
mem_rows = [l.split() for l in open(os.path.join(W, "memory.tsv")) if l.strip()]
if mem_rows:
    n, acked, fill_ms, e0, e1, e2, st, disk = mem_rows[-1]
    n = int(n)
    w(f"At {n:,} stored commands fleetqd holds about {(int(e1) - int(e0)) * 1024 / n:.0f} bytes "
      f"of RSS per command after filling and {(int(e2) - int(e0)) * 1024 / n:.0f} after a "
      f"restart (the in-memory dedupe table and device queues, about 23 and 51-60 bytes per "
      f"command, plus what of the memory-mapped stores the start left mapped), {int(disk) * 1024 / n:.0f} "
      f"bytes on disk, and is serving again {int(st) / 1000:.1f} s after it was started.\n")
w("![memory and startup](results/memory.png)\n")

w("## 4. End to end: dispatch through fleetsim\n")
e2e = open(os.path.join(W, "e2e.txt")).read()
em = re.search(r"median of (\d+): e2e (\d+) commands/s \| ceiling GET (\d+) req/s, POST (\d+) req/s \| "
               r"ratio ([\d.]+) of the higher ceiling \| latency p50 ([\d.]+) p90 ([\d.]+) p99 ([\d.]+) "
               r"p99.9 ([\d.]+) max ([\d.]+) ms \| fleetqd ([\d.]+) us/cmd, fleetsim ([\d.]+) us/cmd", e2e)
http = open(os.path.join(W, "http.txt")).read()
dm = None
hm = re.search(r"median: (\d+) req/s, ([\d.]+) client CPU us/req", http)
if em:
    g = em.groups()
    w(f"`bench_e2e` (the dispatch issue's benchmark): fleetqd (fsync on) dispatching signed "
      f"commands to fleetsim with 10,000 paired, awake cars on loopback; throughput counts "
      f"commands that reached `succeeded`, latency runs from the submit to the terminal event. "
      f"The ceilings are the shard's own libcurl-multi client against the same simulator in the "
      f"same run: sending the same signed commands (the like-for-like ceiling), and sending "
      f"unsigned GET / POST wake_up requests, which the simulator answers with less work. "
      f"Median of {g[0]} round(s).\n")
    w("| measure | figure | run |\n|---|---|---|")
    w(f"| fleetq end to end, submit -> succeeded | {g[1]} commands/s | {tag} |")
    w(f"| end-to-end latency p50 / p90 / p99 / p99.9 / max | {g[5]} / {g[6]} / {g[7]} / {g[8]} / {g[9]} ms | {tag} |")
    w(f"| ceiling: libcurl multi against fleetsim, GET / POST | {g[2]} / {g[3]} req/s | {tag} |")
    sm = re.search(r"signed-command ceiling .*?: (\d+) req/s; e2e / signed ceiling ([\d.]+)", e2e)
    dm = re.search(r"done-when check: .*? median ([\d.]+), lowest round ([\d.]+): (.*)", e2e)
    if sm:
        w(f"| ceiling for the same requests: libcurl multi sending the signed commands to fleetsim | {sm.group(1)} req/s | {tag} |")
    if dm:
        w(f"| **fleetq / the ceiling for the same requests** (per round: median, lowest) | **{dm.group(1)}**, {dm.group(2)} ({dm.group(3)}) | {tag} |")
    w(f"| fleetq / the higher GET or POST ceiling (cheaper requests for the simulator) | {g[4]} | {tag} |")
    w(f"| CPU per command: fleetqd / fleetsim | {g[10]} / {g[11]} us | {tag} |")
    if "failures" in open(os.path.join(W, "e2e.err")).read().lower():
        w("\nbench_e2e reported failures in this run; see its output.")
    em_md = os.path.join(W, "e2e.md")
    if os.path.exists(em_md):
        # bench_e2e's own report of this run, headings moved down a level.
        w("\n<details><summary>bench_e2e's full report of this run</summary>\n")
        for line in open(em_md).read().splitlines():
            w("###" + line.lstrip("#") if line.startswith("#") else line)
        w("\n</details>")
else:
    w("| measure | figure | run |\n|---|---|---|")
    if hm:
        w(f"| ceiling: libcurl multi, one thread, keep-alive, loopback HTTP (bench_http) | {hm.group(1)} req/s, {hm.group(2)} client CPU us/req | {tag} |")
    w(f"| fleetq submit -> signed command -> fleetsim -> succeeded event | pending the dispatch issue (bench_e2e not built or failed) | {tag} |")
w("")
w("## 5. Client packages\n")
cm = os.path.join(OUT, "clients.md")
if os.path.exists(cm) and open(os.path.join(W, "clients.txt")).read().strip():
    # bench_clients.py's report of this run, without its title.
    w("\n".join(open(cm).read().splitlines()[2:]))
else:
    w("bench_clients.py did not run to the end in this run; see `perf/bench_clients.py --help`.")
w("")
w("## 6. Campaigns\n")
cp = os.path.join(OUT, "campaign.md")
if os.path.exists(cp) and open(os.path.join(W, "campaign.txt")).read().strip():
    # bench_campaign.py's report of this run, without its title.
    w("\n".join(open(cp).read().splitlines()[2:]))
else:
    w("bench_campaign.py did not run to the end in this run; see `perf/bench_campaign.py --help`.")
w("")
w("## 7. Cluster mode\n")
ct = os.path.join(OUT, "cluster.txt")
if os.path.exists(ct) and "RESULT" in open(os.path.join(W, "cluster.txt")).read():
    # bench_cluster.py's report of this run, without its title.
    w("\n".join(open(ct).read().splitlines()[2:]))
else:
    w("bench_cluster.py did not run in this run; see `perf/bench_cluster.py --help`.")
w("")
# ---- the issue's table: each measure, its goal, met or not ----------------
S = []
def row(measure, figure, goal, met):
    S.append((measure, figure, goal, "-" if met is None else ("met" if met else "not met")))
rounds_txt = lambda vals, f: ", ".join(f(v) for v in vals)
if pairs and redis_rate:
    row("durable ingest vs Redis 7 (fsync always, same dedupe), median of per-round ratios",
        f"{pair_ratio:.2f}x (rounds: {rounds_txt(ratios, lambda v: f'{v:.2f}')}; fleetq "
        f"{rounds_txt([p['fq'] for p in pairs], lambda v: f'{v:.0f}')} acks/s, Redis "
        f"{rounds_txt([p['redis'] or 0 for p in pairs], lambda v: f'{v:.0f}')})",
        ">= 1.5x", pair_ratio >= 1.5)
if fq_cpu and redis_cpu:
    per = [f"{p['fq_cpu']:.1f}/{p['redis_cpu']:.1f}" for p in pairs if p["fq_cpu"] and p["redis_cpu"]]
    row("server CPU per ack, fleetqd vs redis-server (max-throughput phase)",
        f"{fq_cpu:.1f} vs {redis_cpu:.1f} us = {fq_cpu / redis_cpu:.2f}x (rounds: {', '.join(per)})",
        "fleetqd <= 0.67x Redis", fq_cpu / redis_cpu <= 0.67)
try:
    hp99 = float(fq_half[3])
except ValueError:
    hp99 = None
if hp99 is not None:
    worse = [f"{r}/s ({a:.1f} vs {b:.1f} ms)" for r, a, b in curve if a > b]
    figure = (f"{hp99:.1f} ms at {fq_half[0]}/s offered (Redis {rr.get('half_p99', '?')} ms at "
              f"its half, {rr.get('half_rate', '?')}/s); curve: fleetq p99 worse than Redis' at "
              + (", ".join(worse) if worse else "no rate") + f" of {len(curve)}")
    row("ack p99, open loop at half of the measured maximum", figure,
        "<= 5 ms, and at every offered rate no worse than Redis", hp99 <= 5 and not worse and curve)
if em and dm:
    row("end to end / libcurl ceiling for the same signed requests (median of rounds)",
        f"{dm.group(1)} (lowest round {dm.group(2)})", ">= 0.7", float(dm.group(1)) >= 0.7)
hm2 = re.search(r"half load: offered (\d+)/s, achieved (\d+) commands/s, p50 ([\d.]+) p90 ([\d.]+) "
                r"p99 ([\d.]+)", e2e)
if hm2:
    row("end-to-end p99, open loop at half of the e2e maximum",
        f"{float(hm2.group(5)):.1f} ms at {hm2.group(1)}/s offered ({hm2.group(2)}/s achieved)",
        "<= 50 ms", float(hm2.group(5)) <= 50)
cb = re.search(r"CPU budget: .*?\(fleetqd ([\d.]+) \+", e2e)
cs2 = re.search(r"a signed ceiling request costs [\d.]+ us \(client incl. signing ([\d.]+)", e2e)
if cb and cs2 and float(cs2.group(1)) > 0:
    k = float(cb.group(1)) / float(cs2.group(1))
    row("fleetqd CPU per dispatched command vs a bare client sending the same signed request",
        f"{cb.group(1)} vs {cs2.group(1)} us = {k:.2f}x", "<= 1.3x", k <= 1.3)
if mem_rows:
    n_, acked_, fill_, e0_, e1_, e2_, st_, disk_ = mem_rows[-1]
    per_cmd = (int(e2_) - int(e0_)) * 1024 / int(n_)
    row(f"RSS per stored command after a restart, {int(n_):,} commands"
        + (" (quick: 1M in the full run)" if quick else ""),
        f"{per_cmd:.0f} B", "<= 300 B", per_cmd <= 300)
    row(f"restart until served, {int(n_):,} stored commands", f"{int(st_) / 1000:.2f} s",
        "<= 1 s", 0 <= int(st_) <= 1000)
try:
    ct = open(os.path.join(W, "curve.txt")).read()
except OSError:
    ct = ""
cm2 = re.search(r"CURVE: median (\d+) acks/s vs plaintext (\d+); median of per-round ratios ([\d.]+)"
                r".*?CPU per ack ([\d.]+) vs ([\d.]+) us", ct)
if cm2:
    per = re.findall(r"CURVE/plaintext ([\d.]+)", ct)
    row("with CURVE on: throughput vs plaintext (median of per-round ratios)",
        f"{cm2.group(3)}x ({cm2.group(1)} vs {cm2.group(2)} acks/s; rounds: {', '.join(per)}; "
        f"CPU per ack {cm2.group(4)} vs {cm2.group(5)} us)", ">= 0.7x", float(cm2.group(3)) >= 0.7)
else:
    row("with CURVE on: throughput vs plaintext", "bench_ingest --curve did not report", ">= 0.7x", None)
T = ["## Issue 17: the goals in this run\n",
     f"One run of `perf/run-all.sh{' --quick' if quick else ''}` ({'quick: smaller counts, one round' if quick else 'full'}); "
     "figures per round where there are rounds. CPU per operation moves less than throughput on "
     "this shared machine: steer by it.\n",
     "| measure | this run | goal | |", "|---|---|---|---|"]
T += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in S]
T.append("")
L[SUMMARY_AT:SUMMARY_AT] = T
print("\n".join(T))
w("## Reproduce\n")
w("```sh\nperf/run-all.sh          # full suite (about 8-14 minutes)\nperf/run-all.sh --quick  # 1-2 minutes, smaller counts\n```\n")
w("Pieces can be run alone: `build-perf/bin/bench_ingest --help`, `bench_redis`, "
  "`fleetq-replay gen|run --help`. The traffic format is in `proto/traffic-format.md`.")
open(MD, "w").write("\n".join(L) + "\n")
EOF
if command -v gnuplot >/dev/null; then
  for p in ingest latency memory; do
    gnuplot -e "datadir='$OUT'" "$ROOT/perf/plot-$p.gp" 2>>"$W/gnuplot.log" ||
      { say "gnuplot failed for $p:"; cat "$W/gnuplot.log" >&2; }
  done
fi
say "done in ${ELAPSED} s: perf/RESULTS.md, perf/results/*.png"
