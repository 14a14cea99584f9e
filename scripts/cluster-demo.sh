#!/usr/bin/env bash
# A fleetq cluster on this machine's loopback (issue 18, docs/cluster.md):
#
#   scripts/cluster-demo.sh [--commands N] [--shards N] [--no-failover]
#
# Installs missing packages (scripts/deps.sh), builds fleetqd, fleetq and
# fleetsim, then starts
#   * 3 nats-server processes as one JetStream cluster (max_payload 8MB),
#   * fleetsim (the Fleet API simulator) with 60 paired, awake cars,
#   * 3 fleetqd nodes with --cluster (same --shards, own data dir, ports
#     and --metrics each) and the demo account on each,
# sends N commands (default 300: honks, flashes, locks, charge limits)
# spread over the three nodes, waits until each one has ended, and prints
# where each shard lives (the fleetq_cluster_shard_owned gauges of every
# node) with a summary of the outcomes.  Then, unless --no-failover, it
# kills (-9) the node that owns the most shards, prints how long the
# survivors took to own its shards, and sends N more commands to the
# survivors.  Everything it started is stopped on exit (FQ_KEEP=1 keeps
# the work directory with every log).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COMMANDS=300
SHARDS=6
FAILOVER=1
while [ $# -gt 0 ]; do
  case "$1" in
    --commands) COMMANDS=$2; shift 2 ;;
    --shards) SHARDS=$2; shift 2 ;;
    --no-failover) FAILOVER=0; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "cluster-demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs" --target fleetqd fleetq fleetsim >/dev/null
BIN=$ROOT/build/bin
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)

W=$(mktemp -d /tmp/fq-cluster-demo-XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do
    if [ -n "$p" ]; then kill -9 "$p" 2>/dev/null || true; fi
  done
  for p in "${PIDS[@]:-}"; do
    if [ -n "$p" ]; then wait "$p" 2>/dev/null || true; fi
  done
  if [ "${FQ_KEEP:-0}" = 1 ]; then echo "cluster-demo: kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
say() { echo "cluster-demo: $*"; }

# Free loopback ports: 3 NATS x (client, route, monitor), 3 fleetqd x
# (listen, publish, metrics), fleetsim.
read -r -a PORT <<<"$("$PY" - <<'EOF'
import socket
socks = []
for _ in range(19):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)"
NC=("${PORT[@]:0:3}"); NR=("${PORT[@]:3:3}"); NM=("${PORT[@]:6:3}")
FL=("${PORT[@]:9:3}"); FP=("${PORT[@]:12:3}"); FM=("${PORT[@]:15:3}"); SIMP=${PORT[18]}
URLS="nats://127.0.0.1:${NC[0]},nats://127.0.0.1:${NC[1]},nats://127.0.0.1:${NC[2]}"

# ---- NATS JetStream cluster ----------------------------------------------
for i in 0 1 2; do
  echo "max_payload: 8MB" >"$W/nats$i.conf"
  routes=""
  for j in 0 1 2; do
    [ "$j" = "$i" ] || routes="${routes:+$routes,}nats://127.0.0.1:${NR[$j]}"
  done
  mkdir -p "$W/js$i"
  "$NATS" -c "$W/nats$i.conf" -a 127.0.0.1 -p "${NC[$i]}" -m "${NM[$i]}" -js -sd "$W/js$i" \
    -n "fqdemo$i" --cluster_name fqdemo --cluster "nats://127.0.0.1:${NR[$i]}" \
    --routes "$routes" -l "$W/nats$i.log" </dev/null >/dev/null 2>&1 &
  PIDS+=($!)
done
"$PY" - "${NM[@]}" <<'EOF'
import sys, time, urllib.request
end = time.time() + 30
for port in sys.argv[1:]:
    for q in ("?js-enabled-only=true", ""):
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz{q}", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > end:
                sys.exit(f"nats-server on monitor port {port} not healthy in 30 s")
            time.sleep(0.1)
EOF
say "3 nats-servers up (JetStream cluster fqdemo): $URLS"

# ---- fleetsim, the key and the account token ----------------------------
"$BIN/fleetq" keygen --out "$W/key" >/dev/null
FQ_SRC=$ROOT FQ_BIN=$BIN PYTHONPATH=$ROOT/tests/integration "$PY" - "$W" "$SIMP" <<'EOF'
import json, os, sys
from lib import dispatch as dl
from lib import cluster as lc
w, port = sys.argv[1], sys.argv[2]
base = f"http://127.0.0.1:{port}"
token = dl.make_jwt(lc.ACCOUNT, dl.ALL_SCOPES, [base])
cars = lc.cars(60)
cfg = {"seed": 18, "fleet_public_key": os.path.join(w, "key", "public.pem"), "wake_ms": 1000,
       "accounts": [{"id": lc.ACCOUNT, "scopes": dl.ALL_SCOPES, "vins": cars, "sites": [],
                     "token": token, "refresh_token": "demo-refresh"}],
       "vehicles": [dl.default_vehicle(v) for v in cars], "sites": []}
json.dump(cfg, open(os.path.join(w, "fleetsim.json"), "w"), indent=1)
with open(os.path.join(w, "token"), "w") as f:
    f.write(token + "\n")
os.chmod(os.path.join(w, "token"), 0o600)
EOF
"$BIN/fleetsim" --listen "127.0.0.1:$SIMP" --config "$W/fleetsim.json" >"$W/fleetsim.out" 2>"$W/fleetsim.err" &
PIDS+=($!)
for _ in $(seq 100); do grep -q "listening on" "$W/fleetsim.out" 2>/dev/null && break; sleep 0.1; done
grep -q "listening on" "$W/fleetsim.out" || { say "fleetsim did not start:"; cat "$W/fleetsim.err"; exit 1; }
say "fleetsim on http://127.0.0.1:$SIMP with 60 cars"

# ---- 3 fleetqd nodes ---------------------------------------------------------
NODE_PID=()
start_node() {  # start_node I
  local i=$1
  "$BIN/fleetqd" --data "$W/node$i" --listen "tcp://127.0.0.1:${FL[$i]}" \
    --publish "tcp://127.0.0.1:${FP[$i]}" --metrics "127.0.0.1:${FM[$i]}" --shards "$SHARDS" \
    --cluster "$URLS" --node-id "node$i" --cluster-advertise "tcp://127.0.0.1:${FL[$i]}" \
    --key "$W/key/private.pem" --pairing-domain fleet.example.com --log-level info \
    --wake-poll-ms 200 --retry-backoff-ms 200 </dev/null >>"$W/node$i.log" 2>&1 &
  NODE_PID[i]=$!
  PIDS+=($!)
  # The failover kills one: no "Killed" job report from bash for it.
  disown "$!"
}
wait_ready() {  # wait_ready I
  local i=$1
  for _ in $(seq 600); do
    grep -q "fleetqd: ready" "$W/node$i.log" 2>/dev/null && return 0
    kill -0 "${NODE_PID[$i]}" 2>/dev/null || { say "node$i exited:"; tail -20 "$W/node$i.log"; exit 1; }
    sleep 0.1
  done
  say "node$i not ready in 60 s:"; tail -20 "$W/node$i.log"; exit 1
}
for i in 0 1 2; do start_node "$i"; done
for i in 0 1 2; do wait_ready "$i"; done
for i in 0 1 2; do
  out=$(printf 'demo-refresh\n' | "$BIN/fleetq" account add --endpoint "tcp://127.0.0.1:${FL[$i]}" \
    --account acct1 --access-token-file "$W/token" --refresh-token-file - \
    --client-id demo-client --base-url "http://127.0.0.1:$SIMP" 2>&1) ||
    { echo "$out" | grep -qi exist || { say "account add on node$i failed: $out"; exit 1; }; }
done
say "3 fleetqd nodes ready (--shards $SHARDS): tcp://127.0.0.1:${FL[0]} ${FL[1]} ${FL[2]}"

# ---- traffic, placement, failover (lib/cluster.py) ---------------------------
rc=0
FQ_SRC=$ROOT FQ_BIN=$BIN PYTHONPATH=$ROOT/tests/integration "$PY" - "$COMMANDS" "$SHARDS" \
  "$FAILOVER" "${FL[*]}" "${FM[*]}" "${NODE_PID[*]}" <<'EOF' || rc=$?
import collections, os, signal, sys, time
from lib import cluster as lc
n_cmds, shards, failover = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
listen = [f"tcp://127.0.0.1:{p}" for p in sys.argv[4].split()]
metrics = [f"http://127.0.0.1:{p}/metrics" for p in sys.argv[5].split()]
pids = [int(p) for p in sys.argv[6].split()]
alive = [True, True, True]

def owned(i):
    import urllib.request
    if not alive[i]:
        return None
    try:
        with urllib.request.urlopen(metrics[i], timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return None
    return {int(m.group(1)) for m in lc._OWNED.finditer(text) if float(m.group(2)) == 1.0}

def placement():
    own = {s: [] for s in range(shards)}
    for i in range(3):
        for s in owned(i) or ():
            own.setdefault(s, []).append(f"node{i}")
    return own

def show(title):
    own = placement()
    print(f"\n{title}")
    print("  shard  owner")
    for s in range(shards):
        print(f"  {s:>5}  {', '.join(own[s]) or '(none: busy until taken over)'}")
    per = collections.Counter(o for v in own.values() for o in v)
    print("  " + ", ".join(f"node{i}: {per.get(f'node{i}', 0)} shard(s)"
                           + ("" if alive[i] else " (killed)") for i in range(3)))

def wait_all_owned(timeout=30, still=0.0):
    """Every shard has one owner; with `still`, also the shards are spread
    evenly over the live nodes (the first node up takes them all, then
    hands them over one at a time) and have not moved for `still` s."""
    end = time.time() + timeout
    last, since = None, time.time()
    while time.time() < end:
        own = placement()
        if own != last:
            last, since = own, time.time()
        counts = [sum(1 for v in own.values() if v == [f"node{i}"]) for i in range(3) if alive[i]]
        if all(len(v) == 1 for v in own.values()) and \
                (not still or (max(counts) - min(counts) <= 1 and time.time() - since >= still)):
            return True
        time.sleep(0.1)
    return False

def run(eps, label, seed):
    cars = lc.cars(60)
    tr = lc.Traffic(eps, cars, rate=200, seed=seed, key_prefix=f"demo{seed}", limit=n_cmds,
                    drain_s=60)
    t0 = time.time()
    tr.start()
    tr.wait_done(n_cmds / 200 + 90)
    acked = tr.acked
    final, left, _ = lc.wait_terminal(lambda: eps[0], acked, 120, step=0.5)
    states = collections.Counter(f[0] for f in final.values())
    cmds = collections.Counter(a.command for a in acked)
    print(f"\n{label}: {len(acked)} commands accepted in {time.time() - t0:.1f} s over "
          f"{len(eps)} node(s) ({tr.retry_busy} busy and {tr.retry_timeout} timeout retries with "
          f"the same key, {len(tr.refused)} refused)")
    print("  sent: " + ", ".join(f"{n} {c}" for c, n in cmds.most_common()))
    print("  ended: " + ", ".join(f"{n} {s}" for s, n in states.most_common())
          + (f"; {len(left)} NOT terminal yet" if left else ""))

if not wait_all_owned(60):
    show("cluster-demo: not every shard has an owner after 60 s:")
    sys.exit(1)
print("\nevery shard has an owner; waiting for the nodes to spread them (up to 60 s) ...")
wait_all_owned(60, still=4.0)
show("where each shard lives (fleetq_cluster_shard_owned on each node's --metrics):")
run(listen, "traffic to all 3 nodes", 1)
if failover:
    before = {i: owned(i) or set() for i in range(3)}
    victim = max(range(3), key=lambda i: len(before[i]))
    print(f"\nkill -9 node{victim} (owns shards {sorted(before[victim])}) ...")
    t0 = time.monotonic()
    os.kill(pids[victim], signal.SIGKILL)
    alive[victim] = False
    moved = {}
    while len(moved) < len(before[victim]) and time.monotonic() - t0 < 30:
        for i in range(3):
            for s in (owned(i) or set()) & before[victim]:
                moved.setdefault(s, (time.monotonic() - t0, i))
        time.sleep(0.02)
    for s in sorted(before[victim]):
        t = moved.get(s)
        print(f"  shard {s}: " + (f"owned by node{t[1]} {t[0]:.2f} s after the kill" if t
                                  else "NOT taken over within 30 s"))
    show("where each shard lives now:")
    run([e for i, e in enumerate(listen) if alive[i]], "traffic to the 2 survivors", 2)
EOF
[ "$rc" = 0 ] || { for i in 0 1 2; do say "node$i log tail:"; tail -15 "$W/node$i.log"; done; exit "$rc"; }
say "done (logs: $W/node*.log, nats*.log, fleetsim.err; FQ_KEEP=1 keeps them)"
