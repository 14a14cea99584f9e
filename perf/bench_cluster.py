#!/usr/bin/env python3
"""Cluster mode next to single-node mode in one run (issue 18's benchmark).

    perf/bench_cluster.py [--bin build/bin] [--rounds 3] [--count 20000]
                          [--e2e-count 8000] [--window 256] [--shards 6]
                          [--quick] [--out perf/results/cluster]

Two pairs of worlds on loopback (lib/cluster.py), each pair started
together and measured in alternating rounds (medians of --rounds):

1. ingest: fleetqd with --no-dispatch, one node, next to 3 nodes with
   --cluster on a 3-node NATS JetStream cluster (R3 logs), the same
   --shards.  A closed loop keeps --window submits in flight (unique keys,
   2,000 cars, door_lock) until --count are acked.
2. end to end: the same with dispatch to fleetsim (2,000 paired, awake
   cars, plain HTTP): from the first submit until every command's terminal
   event (each node's PUB; the events of all shards).

A warm-up sends one command per car and reads each car's shard back
(`get`); a round then sends each submit to the node that owns the car's
shard (the nodes balance the shards among themselves; the placement is
read before each round and printed), so that forwarding is not measured.
The ingest phase has a third kind of round that measures it: the submits
go to the 3 nodes in turn, 2 of 3 forwarded to the owner.

For each: acked commands/s (e2e: terminal commands/s), fleetqd CPU per
command (utime + stime from /proc over the round, until the followers are
idle again, less each process's idle rate measured before the round): the
single node; the cluster's 3 nodes summed, the nodes that own shards, and
the 3 nats-servers; and the added cost of replication per command
(cluster - single, with and without NATS).  Prints a table; writes
OUT.txt.  --quick: 1 round, smaller counts."""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import benchenv

ROOT = benchenv.ROOT
benchenv.setup()

import zmq  # noqa: E402

from lib import cluster as lc  # noqa: E402
from lib.fqlib import TERMINAL, pack, unpack  # noqa: E402
from lib.nats import NATS_SERVER, available  # noqa: E402


def say(*a):
    print("bench_cluster:", *a, file=sys.stderr, flush=True)


class World:
    """A FleetCluster plus the pids whose CPU is counted."""

    def __init__(self, kind, cars, shards, dispatch):
        self.kind = kind
        self.fc = lc.FleetCluster(f"bench-{kind}", cars, nodes=3 if kind == "cluster" else 1,
                                  shards=shards, cluster=kind == "cluster",
                                  no_dispatch=not dispatch, log_level="warn",
                                  node_opts={"--http-timeout-ms": None,
                                             "--retry-backoff-ms": None,
                                             "--wake-poll-ms": None})

    def start(self):
        t0 = time.monotonic()
        self.fc.start()
        self.shard_of = {}      # car -> shard, learned from `get` after the warm-up
        self.placed()
        say(f"{self.kind}: up in {time.monotonic() - t0:.1f} s; {self.placement}")
        return self

    def placed(self):
        """Read who owns what (the nodes balance the shards among
        themselves: read again before each round)."""
        if self.kind != "cluster":
            self.owner_of, self.owner_pids, self.placement = {}, [self.fc.nodes[0].proc.pid], \
                "one node"
            return
        # The nodes hand shards over until each holds its share: wait until
        # the placement is balanced and has not changed for 6 s (a move
        # during a round drains the shard and answers busy meanwhile).
        end = time.monotonic() + 90
        last, since = None, time.monotonic()
        while True:
            own = self.fc.wait_owned(timeout=30)
            counts = [sum(1 for v in own.values() if v[0] == n.node_id) for n in self.fc.nodes]
            if own != last:
                last, since = own, time.monotonic()
            if (max(counts) - min(counts) <= 1 and time.monotonic() - since >= 6) or \
                    time.monotonic() > end:
                break
            time.sleep(0.25)
        idx = {n.node_id: i for i, n in enumerate(self.fc.nodes)}
        self.owner_of = {s: idx[v[0]] for s, v in own.items()}
        owners = sorted(set(self.owner_of.values()))
        self.owner_pids = [self.fc.nodes[i].proc.pid for i in owners]
        self.placement = " | ".join(x.strip() for x in self.fc.owner_lines())

    def learn_shards(self, ids):
        """car -> shard from `get` of commands stored for those cars."""
        got = lc.get_all(self.fc.nodes[0].endpoint, list(ids))
        for cmd in got.values():
            if isinstance(cmd, dict) and "shard" in cmd and "vin" in cmd:
                self.shard_of[cmd["vin"]] = cmd["shard"]

    def router(self, forward):
        """car -> index of the node to send to: the owner of its shard, or
        with `forward` the nodes in turn (2 of 3 submits are forwarded)."""
        n = len(self.fc.nodes)
        if n == 1:
            return lambda car, i: 0
        if forward:
            return lambda car, i: i % n
        return lambda car, i: self.owner_of.get(self.shard_of.get(car), i % n)

    def pids(self):
        """{group: [pid]}: fleetqd (all nodes), owners, nats."""
        g = {"fleetqd": [n.proc.pid for n in self.fc.nodes], "owners": self.owner_pids}
        if self.fc.nats:
            g["nats"] = [p.pid for p in self.fc.nats.procs if p]
        return g

    def cpu(self):
        return {k: sum(lc.cpu_s(p) for p in v) for k, v in self.pids().items()}

    def close(self):
        self.fc.close()


def idle_rate(w, secs=1.5):
    a, t0 = w.cpu(), time.monotonic()
    time.sleep(secs)
    b, dt = w.cpu(), time.monotonic() - t0
    return {k: (b[k] - a[k]) / dt for k in a}


def settle_cpu(w, idle, quiet=0.04, step=0.5, limit=20.0):
    """Wait until the processes are back to (about) their idle rate: the
    followers have applied what was appended (less than `quiet` of a
    core above the idle rate over `step`).  Returns the CPU then."""
    end = time.monotonic() + limit
    prev = w.cpu()
    while time.monotonic() < end:
        time.sleep(step)
        cur = w.cpu()
        busy = sum(cur[k] - prev[k] - idle[k] * step for k in ("fleetqd", "nats") if k in cur)
        prev = cur
        if busy < quiet * step:
            break
    return prev


def closed_loop(w, n, window, key, cars, command, sub_eps=None, route=None):
    """Keep `window` submits in flight until n are acked, each sent to the
    node route(car, i) names; with sub_eps also wait for every command's
    terminal event.  Returns (first send, last ack, last terminal or None,
    busy retries, the ids)."""
    ctx = zmq.Context.instance()
    route = route or w.router(forward=True)
    socks = []
    for ep in [x.endpoint for x in w.fc.nodes]:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        s.connect(ep)
        socks.append(s)
    subs = []
    for ep in sub_eps or ():
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(ep)
        subs.append(s)
    if subs:
        time.sleep(0.5)  # the subscriptions reach the publishers
    poller = zmq.Poller()
    for s in socks + subs:
        poller.register(s, zmq.POLLIN)
    msgs = {}
    inflight = 0
    sent = acked = busy = 0
    ids, ended = set(), set()
    early = set()   # terminal events seen before their ack
    t_first = time.monotonic()
    t_ack = t_end = None

    def send(i):
        m = msgs[i]
        socks[route(m["vin"], i)].send(pack(m))

    while acked < n or (subs and len(ended) < n):
        while sent < n and inflight < window:
            msgs[sent] = {"op": "submit", "tenant": "bench", "key": f"{key}-{sent}",
                          "account": lc.ACCOUNT, "vin": cars[(sent * 7919) % len(cars)],
                          "command": command, "ttl_ms": 600000, "req": sent}
            send(sent)
            sent += 1
            inflight += 1
        for s, _ in poller.poll(1000):
            while True:
                try:
                    frames = s.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                r = unpack(frames[-1])
                if s in subs:
                    if r.get("state") in TERMINAL and r.get("tenant") == "bench":
                        i = r.get("id")
                        if i in ids:
                            ended.add(i)
                        else:
                            early.add(i)
                    continue
                req = r.get("req")
                if r.get("ok"):
                    ids.add(r["id"])
                    if r["id"] in early:
                        ended.add(r["id"])
                    acked += 1
                    inflight -= 1
                    msgs.pop(req, None)
                    if acked == n:
                        t_ack = time.monotonic()
                elif r.get("error") == "busy":
                    busy += 1
                    send(req)
                else:
                    raise RuntimeError(f"submit refused: {r!r}")
        if subs and len(ended) >= n and t_end is None:
            t_end = time.monotonic()
    for s in socks + subs:
        s.close(0)
    return t_first, t_ack, t_end, busy, ids


def round_(w, phase, r, n, window, cars, command, e2e, forward=False):
    settle_cpu(w, {k: 0.0 for k in w.cpu()}, quiet=0.1)
    w.placed()
    idle = idle_rate(w)
    c0 = w.cpu()
    sub_eps = [x.publish for x in w.fc.nodes] if e2e else None
    key = f"{phase}-{w.kind}{'-fwd' if forward else ''}-{r}"
    t0, t_ack, t_end, busy, _ = closed_loop(w, n, window, key, cars, command, sub_eps,
                                            w.router(forward))
    t_stop = t_end if e2e else t_ack
    c1 = settle_cpu(w, idle)
    dt = time.monotonic() - t0
    cpu = {k: max(0.0, c1[k] - c0[k] - idle[k] * dt) / n * 1e6 for k in c0}
    res = {"rate": n / (t_stop - t0), "secs": t_stop - t0, "busy": busy,
           "cpu_us": cpu, "idle_cpu_pct": {k: round(v * 100, 2) for k, v in idle.items()},
           "cpu_us_raw": {k: (c1[k] - c0[k]) / n * 1e6 for k in c0}}
    if e2e:
        res["ack_rate"] = n / (t_ack - t0)
    res["placement"] = w.placement
    res["owner_nodes"] = len(w.owner_pids)
    say(f"  {phase} round {r} {w.kind}{' (any node)' if forward else ''}: "
        f"{res['rate']:.0f} cmd/s, fleetqd "
        f"{cpu['fleetqd']:.1f} us/cmd (owners {cpu['owners']:.1f})"
        + (f", nats {cpu['nats']:.1f}" if "nats" in cpu else "") + f", busy {busy}; idle "
        f"CPU % before {res['idle_cpu_pct']}")
    return res


def med(rs, f):
    v = [f(x) for x in rs]
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def phase(name, args, dispatch, n, cars, command):
    worlds = {k: World(k, cars, args.shards, dispatch) for k in ("single", "cluster")}
    kinds = ["single", "cluster"] + ([] if dispatch else ["cluster_fwd"])
    res = {k: [] for k in kinds}
    try:
        for w in worlds.values():
            w.start()
        # A warm-up (sessions, pages, connections) with one command per car:
        # `get` of those tells each car's shard, so that a round can send
        # each submit to the node that owns it.
        for w in worlds.values():
            *_, ids = closed_loop(w, len(cars), args.window, f"{name}-warm-{w.kind}", cars,
                                  command, [x.publish for x in w.fc.nodes] if dispatch else None)
            w.learn_shards(ids)
        for r in range(1, args.rounds + 1):
            for k in kinds if r % 2 else kinds[::-1]:
                w = worlds["cluster" if k == "cluster_fwd" else k]
                res[k].append(round_(w, name, r, n, args.window, cars, command, dispatch,
                                     forward=k == "cluster_fwd"))
    finally:
        placement = worlds["cluster"].placement if hasattr(worlds["cluster"], "placement") else "?"
        for w in worlds.values():
            w.close()
    s, c = res["single"], res["cluster"]
    out = {
        "rounds": len(s), "count": n, "window": args.window, "placement": placement,
        "single_rate": med(s, lambda x: x["rate"]), "cluster_rate": med(c, lambda x: x["rate"]),
        "single_cpu_us": med(s, lambda x: x["cpu_us"]["fleetqd"]),
        "cluster_cpu_us_nodes": med(c, lambda x: x["cpu_us"]["fleetqd"]),
        "cluster_cpu_us_owners": med(c, lambda x: x["cpu_us"]["owners"]),
        "cluster_cpu_us_nats": med(c, lambda x: x["cpu_us"].get("nats")),
        "cluster_busy": sum(x["busy"] for x in c), "raw": res,
        "owner_nodes": max((x["owner_nodes"] for x in c), default=0),
    }
    if dispatch:
        out["single_ack_rate"] = med(s, lambda x: x.get("ack_rate"))
        out["cluster_ack_rate"] = med(c, lambda x: x.get("ack_rate"))
    out["added_us_nodes"] = out["cluster_cpu_us_nodes"] - out["single_cpu_us"]
    out["added_us_with_nats"] = (out["cluster_cpu_us_nodes"] + (out["cluster_cpu_us_nats"] or 0)
                                 - out["single_cpu_us"])
    out["added_us_owners"] = out["cluster_cpu_us_owners"] - out["single_cpu_us"]
    f = res.get("cluster_fwd")
    if f:
        out["fwd_rate"] = med(f, lambda x: x["rate"])
        out["fwd_cpu_us_nodes"] = med(f, lambda x: x["cpu_us"]["fleetqd"])
        out["fwd_cpu_us_nats"] = med(f, lambda x: x["cpu_us"].get("nats"))
    return out


def table(res, meta):
    L = [f"# fleetq cluster (3 nodes, NATS JetStream R3) vs single node, {meta['run']}", "",
         f"`perf/bench_cluster.py{meta['flags']}`: {meta['shards']} shards on every node, "
         f"closed loop with {meta['window']} submits in flight; medians of {meta['rounds']} "
         "alternating rounds; CPU = utime + stime from /proc until the followers are idle again, "
         "less the idle rate measured before each round.", ""]
    for name, title, rate in (("ingest", "ingest (--no-dispatch): acked commands/s", "acked/s"),
                              ("e2e", "end to end through fleetsim: submit -> terminal event",
                               "terminal/s")):
        r = res.get(name)
        if not r:
            continue
        L += [f"## {title}", "", f"cluster placement: {r['placement']}", "",
              "| | single node | cluster | cluster / single |", "|---|---|---|---|"]

        def f(x, d=1):
            return "-" if x is None else f"{x:,.{d}f}"
        L.append(f"| {rate} | {f(r['single_rate'], 0)} | {f(r['cluster_rate'], 0)} | "
                 f"{f(r['cluster_rate'] / r['single_rate'], 2)}x |")
        if "single_ack_rate" in r:
            L.append(f"| acked/s (same run) | {f(r['single_ack_rate'], 0)} | "
                     f"{f(r['cluster_ack_rate'], 0)} | "
                     f"{f(r['cluster_ack_rate'] / r['single_ack_rate'], 2)}x |")
        L.append(f"| fleetqd CPU us/command, all nodes | {f(r['single_cpu_us'])} | "
                 f"{f(r['cluster_cpu_us_nodes'])} | "
                 f"{f(r['cluster_cpu_us_nodes'] / r['single_cpu_us'], 2)}x |")
        every = " (every node owns shards: as above)" if r.get("owner_nodes", 0) >= 3 else ""
        L.append(f"| fleetqd CPU us/command, owner node(s) only{every} | {f(r['single_cpu_us'])} | "
                 f"{f(r['cluster_cpu_us_owners'])} | "
                 f"{f(r['cluster_cpu_us_owners'] / r['single_cpu_us'], 2)}x |")
        L.append(f"| nats-server CPU us/command (3 servers) | - | {f(r['cluster_cpu_us_nats'])} | |")
        if "fwd_rate" in r:
            L.append(f"| submits to any node (2 of 3 forwarded): {rate} | | {f(r['fwd_rate'], 0)} | "
                     f"{f(r['fwd_rate'] / r['single_rate'], 2)}x |")
            L.append(f"| submits to any node: fleetqd CPU us/command, all nodes | | "
                     f"{f(r['fwd_cpu_us_nodes'])} | "
                     f"{f(r['fwd_cpu_us_nodes'] / r['single_cpu_us'], 2)}x |")
        L.append(f"| added by replication, us/command: nodes / nodes + NATS / owner only | | "
                 f"{f(r['added_us_nodes'])} / {f(r['added_us_with_nats'])} / "
                 f"{f(r['added_us_owners'])} | |")
        L.append("")
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.environ["FQ_BIN"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--e2e-count", type=int, default=8000)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--shards", type=int, default=6)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "perf", "results", "cluster"))
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.count, a.e2e_count = 1, 5000, 2000
    if not available():
        sys.exit("bench_cluster: nats-server is not installed (scripts/deps.sh)")
    if not lc.fleetqd_has_cluster():
        sys.exit(f"bench_cluster: {a.bin}/fleetqd has no --cluster")
    res = {}
    say(f"1/2 ingest (--no-dispatch): {a.count} per round, {a.rounds} round(s)")
    res["ingest"] = phase("ingest", a, False, a.count, lc.cars(2000, prefix="5YJ3B3NC"),
                          "door_lock")
    if not a.skip_e2e:
        say(f"2/2 end to end through fleetsim: {a.e2e_count} per round, {a.rounds} round(s)")
        res["e2e"] = phase("e2e", a, True, a.e2e_count, lc.cars(2000, prefix="5YJ3B3ND"),
                           "door_lock")
    cpu, git = benchenv.machine()
    nats_v = subprocess.run([NATS_SERVER, "--version"], capture_output=True,
                            text=True).stdout.strip()
    meta = {"run": (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu} x "
                    f"{os.cpu_count()} (load {os.getloadavg()[0]:.1f}); fleetq {git}; {nats_v}; "
                    f"Python {platform.python_version()}"),
            "flags": " --quick" if a.quick else "", "shards": a.shards, "window": a.window,
            "rounds": a.rounds}
    text = table(res, meta)
    print(text)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out + ".txt", "w") as f:
        f.write(text)
    with open(a.out + ".json", "w") as f:
        json.dump({"meta": meta, "results": res}, f, indent=1)
    for name, r in res.items():
        print(f"RESULT {name} single={r['single_rate']:.0f}/s cluster={r['cluster_rate']:.0f}/s "
              f"cpu_single={r['single_cpu_us']:.1f}us cpu_cluster={r['cluster_cpu_us_nodes']:.1f}us "
              f"owners={r['cluster_cpu_us_owners']:.1f}us nats={r['cluster_cpu_us_nats'] or 0:.1f}us "
              f"added={r['added_us_nodes']:.1f}us added_with_nats={r['added_us_with_nats']:.1f}us")


if __name__ == "__main__":
    main()
