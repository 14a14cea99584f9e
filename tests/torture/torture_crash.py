#!/usr/bin/env python3
"""Torture: crash loop (issue 13).

A producer submits a mix of commands (honk_horn: not idempotent; door_lock
and set_charge_limit: idempotent) to awake, asleep and legacy (REST) cars
through a real fleetqd dispatching to a real fleetsim, retrying every
unanswered submit with the same key until it is acknowledged.  Meanwhile
fleetqd is killed with SIGKILL at random moments and restarted, and every
few kills fleetsim is killed too (its execution log is read first) and
restarted.  Then the checker:

* every acknowledged command ends in a terminal state (`get`);
* no non-idempotent command ran twice: per car, the honks the simulator
  executed are at most the honks that ended `succeeded` or `unknown`;
* per-device order: a command starts (`dispatching`) only after the one
  acknowledged before it on the same car has ended;
* `history` is gap-free (seq per shard, tseq per tenant and shard) and
  agrees with what was published;
* dedupe holds: every acknowledged key submitted again answers `dup` with
  the same id.

usage: torture_crash.py [--kills N] [--sim-every K] [--seed S] [--rate R]
Short form (CI): 20 kills; long form (scripts/soak.sh): 1,000.
"""
import argparse
import os
import random
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from lib import dispatch as dl  # noqa: E402
from lib.fqlib import TERMINAL, Client, log  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--kills", type=int, default=int(os.environ.get("FQ_TORTURE_KILLS", "20")))
ap.add_argument("--sim-every", type=int, default=7, help="kill fleetsim every K daemon kills")
ap.add_argument("--seed", type=int, default=int(os.environ.get("FQ_SEED", "1313")))
ap.add_argument("--rate", type=float, default=40.0, help="submits per second")
ap.add_argument("--settle", type=float, default=90.0, help="seconds allowed to finish at the end")
args = ap.parse_args()

rng = random.Random(args.seed)
AWAKE = [dl.vin(400 + i) for i in range(6)]
ASLEEP = [dl.vin(420 + i) for i in range(2)]
LEGACY = [dl.vin(440 + i) for i in range(2)]
CARS = AWAKE + ASLEEP + LEGACY
VEHICLES = ([dl.default_vehicle(v) for v in AWAKE] +
            [dl.default_vehicle(v, asleep=True) for v in ASLEEP] +
            [dl.default_vehicle(v, legacy=True) for v in LEGACY])


class Producer(threading.Thread):
    """Submits until told to stop; every submit is retried with the same
    key (and content) until it is acknowledged."""

    def __init__(self, w):
        super().__init__(daemon=True)
        self.w = w
        self.stop = threading.Event()
        self.acked = []   # (order, key, id, vin, command), in ack order
        self.retries = 0
        self.lock = threading.Lock()

    def request(self, i):
        v = rng.choice(CARS)
        cmd = rng.choice(["honk_horn", "door_lock", "set_charge_limit"])
        m = {"op": "submit", "tenant": dl.TENANT, "key": f"tc-{args.seed}-{i}", "account": "acct1",
             "vin": v, "command": cmd, "ttl_ms": 600000}
        if cmd == "set_charge_limit":
            m["params"] = {"percent": rng.randrange(50, 101)}
        return m

    def run(self):
        i = 0
        cl = Client(self.w.daemon.endpoint, timeout=2.0)
        while not self.stop.is_set():
            m = self.request(i)
            while True:
                try:
                    r = cl.call(m)
                except TimeoutError:
                    # fleetqd is down or restarting: same key again, on a
                    # fresh socket so that a late reply cannot be mistaken.
                    self.retries += 1
                    cl.close()
                    cl = Client(self.w.daemon.endpoint, timeout=2.0)
                    if self.stop.is_set():
                        cl.close()
                        return
                    continue
                break
            if r.get("ok"):
                with self.lock:
                    self.acked.append((len(self.acked), m, r["id"]))
            elif r.get("error") != "busy":
                log(f"submit {m['key']} refused: {r}")
            i += 1
            time.sleep(rng.expovariate(args.rate))
        cl.close()


def body(c, w):
    honk_execs = {}

    def take_execs():
        for e in w.execs():
            if e.get("command") == "honk_horn":
                honk_execs[e["vin"]] = honk_execs.get(e["vin"], 0) + 1

    p = Producer(w)
    p.start()
    t0 = time.monotonic()
    sim_kills = 0
    for k in range(args.kills):
        time.sleep(rng.uniform(0.3, 1.5))
        w.daemon.kill9()
        if args.sim_every and (k + 1) % args.sim_every == 0:
            take_execs()
            w.sim.proc.kill()
            w.sim.proc.wait()
            w.sim.start()
            sim_kills += 1
        w.daemon.start()
    p.stop.set()
    p.join(30)
    log(f"{args.kills} fleetqd kills and {sim_kills} fleetsim kills in "
        f"{time.monotonic() - t0:.1f} s; {len(p.acked)} acked, {p.retries} retried submits")
    c.ok(len(p.acked) >= 10 * args.kills, "enough commands were acknowledged", len(p.acked))

    # Every acknowledged command ends.
    cl = Client(w.daemon.endpoint, timeout=15)
    deadline = time.monotonic() + args.settle
    final = {}
    pending = [x for x in p.acked]
    while pending and time.monotonic() < deadline:
        still = []
        for x in pending:
            r = cl.get(x[2])
            st = r.get("command", {}).get("state") if r.get("ok") else None
            if st in TERMINAL:
                final[x[2]] = r["command"]
            else:
                still.append(x)
        pending = still
        if pending:
            time.sleep(1.0)
    c.eq([x[2] for x in pending], [], "every acknowledged command is terminal",
         [(x[1]["key"], cl.get(x[2]).get("command", {}).get("state")) for x in pending[:5]])
    states = {}
    for cmd in final.values():
        states[cmd["state"]] = states.get(cmd["state"], 0) + 1
    log(f"final states: {states}")
    why = {}
    for cmd in final.values():
        if cmd["state"] != "succeeded":
            k = (cmd["state"], cmd["command"], (cmd.get("reason") or "")[:90])
            why[k] = why.get(k, 0) + 1
    for k, n in sorted(why.items(), key=lambda kv: -kv[1])[:8]:
        log(f"  {n} x {k}")

    # No non-idempotent command ran twice.
    take_execs()
    for v in CARS:
        ok_or_maybe = sum(1 for x in p.acked
                          if x[1]["vin"] == v and x[1]["command"] == "honk_horn" and
                          final.get(x[2], {}).get("state") in ("succeeded", "unknown"))
        c.ok(honk_execs.get(v, 0) <= ok_or_maybe,
             f"{v}: honks executed <= honks succeeded or unknown", honk_execs.get(v, 0), ok_or_maybe)
    c.ok(sum(honk_execs.values()) > 0, "honks were executed at all", honk_execs)

    # History: gap-free, and per-device order.
    w.drain(0.2)
    hist = w.history()
    w.check_seq(c)
    first_dispatch, end = {}, {}
    for e in hist:
        if e["state"] == "dispatching" and e["id"] not in first_dispatch:
            first_dispatch[e["id"]] = e["seq"]
        if e["state"] in TERMINAL:
            end[e["id"]] = e["seq"]
    order_bad = []
    for v in CARS:
        seq = [x for x in p.acked if x[1]["vin"] == v]
        for a, b in zip(seq, seq[1:]):
            fb = first_dispatch.get(b[2])
            ea = end.get(a[2])
            if fb is not None and (ea is None or ea > fb):
                order_bad.append((v, a[1]["key"], b[1]["key"], ea, fb))
    c.eq(order_bad[:5], [], "per-device order: each command starts after the one before ended")

    # Dedupe holds.
    dup_bad = []
    for x in p.acked:
        r = cl.call(x[1])
        if not (r.get("ok") and r.get("dup") is True and r.get("id") == x[2]):
            dup_bad.append((x[1]["key"], r))
    c.eq(dup_bad[:5], [], "every acknowledged key dedupes to its command")
    cl.close()
    log(f"torture_crash: tried {len(p.acked)}, lost {len(pending)}, honks run twice "
        f"{sum(1 for v in CARS if honk_execs.get(v, 0) > sum(1 for x in p.acked if x[1]['vin'] == v and x[1]['command'] == 'honk_horn'))}, "
        f"order violations {len(order_bad)}, dedupe failures {len(dup_bad)}")


if __name__ == "__main__":
    dl.run("torture_crash", body, vehicles=VEHICLES, shards=2,
           daemon_opts={"--wake-poll-ms": 500, "--retry-backoff-ms": 200,
                        "--http-timeout-ms": 2000})
