#!/usr/bin/python3
"""Issue 18: a fleetq cluster under load loses a fleetqd node, then a
nats-server, and no command is lost or run twice.

3 nats-servers (a JetStream cluster, lib/nats.py), 3 fleetqd nodes with
--cluster (6 shards) and fleetsim with 600 cars, all on loopback
(lib/cluster.py).  A generator submits about 1,000 commands/s over every
car and all 3 nodes: honk_horn and flash_lights (not idempotent),
door_lock / door_unlock, set_charge_limit and set_charging_amps
(idempotent, params that change from one command of a car to the next),
one command in flight per car, each with its own idempotency key and
retried with that key on `busy` or a timeout (another node) until
acknowledged.  During the traffic, per cycle:

  1. kill -9 the fleetqd node that owns the most shards; the takeover time
     of each of its shards is measured (kill -> a survivor's metrics show
     fleetq_cluster_shard_owned{shard} 1) and must be < 5 s;
  2. restart it (same data dir and ports);
  3. kill -9 one nats-server (the cycle picks which), then restart it;
     printed: how long acks paused and when every shard had an owner again.

Then the traffic stops, every started submit is acked, and the checks
(lib/cluster.py Outcome), through live nodes:

  * every acked command reaches a terminal state (`get`);
  * no non-idempotent command executed twice in fleetsim's log (per car
    and command: executed <= succeeded + unknown, and >= succeeded);
  * per-car order: fleetsim executed each car's commands in the order they
    were acked (an idempotent one may repeat right away: a retry), and
    every succeeded command is in its log; session counters only go up;
  * each shard's history is gap-free (seq 1..N, tseq 1..n per tenant), each
    acked command's events are one life whose end is what `get` shows;
  * the events one node published (it follows or owns every shard) are
    the stored ones, seqs going up per shard;
  * a sample of acked keys sent again to any node answers `dup` with the
    same id (dedupe is cluster-wide).

Prints the figures: commands acked, retries, terminal states, takeover
times, the pauses.  Skips (exit 77) only when nats-server is missing.

  test_cluster_fault.py [--seconds 60] [--rate 1000] [--cars 600] [--cycles 1]
                        [--shards 6] [--settle 150] [--single]

scripts/cluster-soak.sh runs it for N minutes with several cycles.
--single runs the same traffic and checks against one plain fleetqd
(kill -9 and restart instead of a takeover, no NATS): a check of the
checks.  On a fleetqd without --cluster the test fails: the flag is
refused."""

import argparse
import os
import sys
import time

from lib import cluster as lc
from lib import fqlib
from lib.fqlib import log
from lib.nats import available

TAKEOVER_MAX_S = 5.0

ap = argparse.ArgumentParser()
ap.add_argument("--seconds", type=float, default=float(os.environ.get("FQ_FAULT_SECONDS", 60)))
ap.add_argument("--rate", type=float, default=float(os.environ.get("FQ_FAULT_RATE", 1000)))
ap.add_argument("--cars", type=int, default=600)
ap.add_argument("--cycles", type=int, default=1)
ap.add_argument("--shards", type=int, default=6)
ap.add_argument("--settle", type=float, default=150.0,
                help="seconds allowed after the traffic for every command to end")
ap.add_argument("--seed", type=int, default=int(os.environ.get("FQ_SEED", 1818)))
ap.add_argument("--single", action="store_true",
                help="one plain fleetqd, kill -9 + restart (checks the checks)")
args = ap.parse_args()


def sleep_until(t):
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)


def pick_victim(fc):
    """The live node that owns the most shards."""
    best = None
    for n in fc.live():
        k = len(n.owned() or ())
        if best is None or k > best[0]:
            best = (k, n)
    return best[1]


def move_observer(fc, tr, victim, state):
    """Keep the event subscription off the node about to be killed."""
    if state["observer"] is victim:
        other = next(n for n in fc.live() if n is not victim)
        tr.observe(other.publish)
        state["observer"] = other
        log(f"  events now observed on {other.node_id}")


def node_cycle(c, fc, tr, figs, t_restart):
    victim = pick_victim(fc)
    move_observer(fc, tr, victim, figs)
    before, times = fc.takeover(victim)
    shown = " ".join(f"{s}:{'-' if t is None else f'{t:.2f}'}" for s, t in sorted(times.items()))
    worst = max((t for t in times.values() if t is not None), default=None)
    log(f"  kill -9 {victim.node_id} (owned shards {sorted(before)}): takeover per shard (s) "
        f"{shown}; slowest {worst if worst is None else round(worst, 2)}")
    c.ok(before, f"{victim.node_id} owned shards before its kill", before)
    for s, t in sorted(times.items()):
        c.ok(t is not None and t < TAKEOVER_MAX_S,
             f"shard {s} taken over within {TAKEOVER_MAX_S} s of {victim.node_id}'s kill -9",
             f"measured: {t}")
    figs["takeovers"] += [t for t in times.values() if t is not None]
    figs["takeover_missing"] += sum(1 for t in times.values() if t is None)
    # Every shard has one owner again soon after: not at the very moment
    # the victim's shards are taken (the nodes may be handing another shard
    # over to balance, which leaves it without an owner for a moment).
    t0 = time.monotonic()
    try:
        fc.wait_owned(timeout=10)
        ok, own = True, None
    except RuntimeError as e:
        ok, own = False, str(e)
    c.ok(ok, "within 10 s of the takeover every shard has one owner", own)
    if ok and time.monotonic() - t0 > 0.5:
        log(f"  (every shard had one owner {time.monotonic() - t0:.2f} s after the takeover)")
    sleep_until(t_restart)
    t0 = time.monotonic()
    victim.start(timeout=90)
    log(f"  restarted {victim.node_id}: ready in {time.monotonic() - t0:.2f} s; "
        f"owners: {' | '.join(x.strip() for x in fc.owner_lines())}")


def single_cycle(c, fc, tr, figs, t_restart):
    node = fc.nodes[0]
    t0 = time.monotonic()
    node.kill9()
    node.start(timeout=90)
    log(f"  --single: kill -9 and restart of the one fleetqd, ready in "
        f"{time.monotonic() - t0:.2f} s")


def watch_owners(fc, until, state):
    """Sample who owns each shard every 100 ms until `until` (monotonic);
    state: {"since": {shard: when it was first seen without an owner},
    "worst": {shard: longest stretch without one}}."""
    while True:
        now = time.monotonic()
        own = fc.ownership()
        for s in range(fc.shards):
            if len(own.get(s, [])) == 1:
                t = state["since"].pop(s, None)
                if t is not None:
                    state["worst"][s] = max(state["worst"].get(s, 0.0), now - t)
            else:
                state["since"].setdefault(s, now)
        if now >= until:
            return own
        time.sleep(0.1)


def nats_cycle(c, fc, tr, figs, k, t_restart):
    i = k % fc.nats.n
    t0 = time.monotonic()
    fc.nats.kill9(i)
    # Shards may lose their owners for a while (the lease bucket's or a
    # log's Raft leader died, and again when the server comes back):
    # measured as the longest stretch a shard had no owner.
    st = {"since": {}, "worst": {}}
    watch_owners(fc, t_restart, st)
    t1 = time.monotonic()
    fc.nats.restart(i)
    t_back = time.monotonic()
    # Watch on for a while after the restart, until every shard is owned.
    end = t_back + 30
    while True:
        own = watch_owners(fc, min(end, time.monotonic() + 3), st)
        if all(len(own.get(s, [])) == 1 for s in range(fc.shards)) or time.monotonic() >= end:
            break
    ok = all(len(own.get(s, [])) == 1 for s in range(fc.shards))
    c.ok(ok, "every shard has one owner again after the nats-server restart", own)
    now = time.monotonic()
    for s, t in st["since"].items():
        st["worst"][s] = max(st["worst"].get(s, 0.0), now - t)
    gap_down = tr.max_gap(t0, t1)
    gap_up = tr.max_gap(t_back, now)
    worst = max(st["worst"].values(), default=0.0)
    log(f"  kill -9 nats-server {i} at {t0 - figs['start']:.1f} s, restarted at "
        f"{t1 - figs['start']:.1f} s (ready in {t_back - t1:.2f} s): longest pause of acks "
        f"{gap_down:.2f} s while it was down, {gap_up:.2f} s after its restart; shards without "
        f"an owner for a while: "
        f"{' '.join(f'{s}:{w:.2f}' for s, w in sorted(st['worst'].items())) or 'none'}")
    figs["nats_pauses"].append(round(max(gap_down, gap_up), 2))
    figs["nats_ownerless"].append(round(worst, 2))


def body(c):
    if not args.single and not available():
        log("SKIP test_cluster_fault: nats-server is not installed (scripts/deps.sh installs "
            "Debian's nats-server)")
        sys.exit(77)
    rng_seed = args.seed
    log(f"[test_cluster_fault] seed {rng_seed} (--seed / FQ_SEED), {args.rate:.0f} commands/s "
        f"for {args.seconds:.0f} s over {args.cars} cars, {args.cycles} cycle(s), "
        f"{'ONE plain fleetqd (--single)' if args.single else '3 nodes, 3 nats-servers'}")
    cars = lc.cars(args.cars)
    fc = lc.FleetCluster("fault", cars, nodes=1 if args.single else 3, shards=args.shards,
                         cluster=not args.single, seed=rng_seed)
    t0 = time.monotonic()
    fc.start()
    log(f"  up in {time.monotonic() - t0:.1f} s; shard owners:")
    for line in fc.owner_lines():
        log(line)
    figs = {"takeovers": [], "takeover_missing": 0, "nats_pauses": [], "nats_ownerless": [],
            "observer": fc.nodes[-1] if not args.single else fc.nodes[0]}
    # A soak publishes millions of events: keep a sample to compare with
    # the stored ones (every event is still checked for its order).
    pub_sample = max(1, round(args.rate * args.seconds / 250000))
    tr = lc.Traffic(fc.endpoints(), cars, args.rate, rng_seed, observe=figs["observer"].publish,
                    key_prefix=f"f{rng_seed}", pub_sample=pub_sample)
    tr.start()
    start = figs["start"] = time.monotonic()
    L = args.seconds / args.cycles
    for k in range(args.cycles):
        base = start + k * L
        sleep_until(base + 0.15 * L)
        log(f"cycle {k + 1}/{args.cycles} at {time.monotonic() - start:.1f} s, "
            f"{tr.count()} acked so far")
        if args.single:
            single_cycle(c, fc, tr, figs, base + 0.40 * L)
        else:
            node_cycle(c, fc, tr, figs, base + 0.40 * L)
            sleep_until(base + 0.55 * L)
            nats_cycle(c, fc, tr, figs, k, base + 0.75 * L)
        if tr.error:
            break
    sleep_until(start + args.seconds)
    tr.stop()
    c.ok(tr.wait_done(180), "the traffic drained (every started submit acked)")
    c.eq(repr(tr.error), "None", "the traffic generator ran without an error")
    span = (tr.t_stop or time.monotonic()) - start
    log(f"traffic: {len(tr.acked)} acked in {span:.1f} s ({len(tr.acked) / span:.0f}/s), "
        f"{tr.retry_busy} busy retries, {tr.retry_timeout} timeout retries, "
        f"{sum(1 for a in tr.acked if a.dup)} acked as dup (an earlier try had landed), "
        f"{tr.starved} slots with no idle car, {len(tr.refused)} refused")
    log(f"  acks/s per 5 s: {tr.timeline(start)}")
    lats = sorted(a.lat for a in tr.acked)
    if lats:
        log(f"  submit -> ack (retries included): p50 {lats[len(lats) // 2] * 1000:.1f} ms, "
            f"p99 {lats[int(len(lats) * 0.99)] * 1000:.1f} ms, max {lats[-1]:.2f} s")
    c.ok(len(tr.acked) >= 0.5 * args.rate * args.seconds,
         f"at least half the offered commands were acked ({args.rate * args.seconds:.0f} offered)",
         len(tr.acked))
    figures = lc.Outcome(fc, tr).check(c, settle_s=args.settle)
    log(f"terminal states: {figures.get('states')} (all {figures.get('acked')} acked, "
        f"settled {figures.get('settle_s')} s after the traffic)")
    for (st, cmd, why), n in figures.get("not_succeeded", []):
        log(f"  {n} x {st} {cmd}: {why}")
    log(f"fleetsim executed {figures.get('executions')} commands "
        f"({figures.get('nonidem_executed')} not idempotent); events stored "
        f"{figures.get('events')} {figures.get('events_per_shard')}; published events seen "
        f"{figures.get('published_seen')} (compared with the stored: "
        f"{figures.get('published_compared')}); dups checked {figures.get('dedupe_checked')}")
    if not args.single:
        tk = sorted(figs["takeovers"])
        log(f"TAKEOVER times (s, kill -9 -> owned on a survivor): "
            f"{' '.join(f'{t:.2f}' for t in tk)}; max {max(tk) if tk else None}; "
            f"missing {figs['takeover_missing']}")
        log(f"NATS kill: longest ack pause per kill (s): {figs['nats_pauses']}; longest time a "
            f"shard had no owner per kill (s): {figs['nats_ownerless']}")
    rc = fc.close()
    c.eq(rc, 0, "fleetsim exits 0")


fqlib.run_test("test_cluster_fault", body)
