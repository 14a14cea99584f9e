#!/usr/bin/python3
"""Issue 2, durability across crashes: pipeline thousands of submits, kill -9
the daemon at a random (seeded, logged) moment, restart it on the same data
dir, and check that every acked command is there with its state, that
dedupe still answers dup with the same id, and that each shard's event seq
is gap-free and continues after the restart.  Repeated a few times; then
SIGTERM drains and exits 0."""

import threading
import time

from lib import fqlib
from lib.fqlib import Client, Daemon, pipeline, vin

ROUNDS = 3
PER_ROUND = 30000  # more than the daemon acks before the kill
SHARDS = 4


def make_request(r, i):
    m = {"op": "submit", "tenant": f"rs{i % 3}", "key": f"r{r}-{i}", "account": "a",
         "ttl_ms": 3600000}
    if i % 10 == 9:
        m.update(site=1000 + i % 17, command="backup",
                 params={"backup_reserve_percent": i % 101})
    elif i % 2:
        m.update(vin=vin(i % 300), command="set_charge_limit", params={"percent": 50 + i % 51})
    else:
        m.update(vin=vin(i % 300), command="door_lock")
    return m


def produce(endpoint, reqs, acked, replies_seen):
    """Pipeline reqs (window 300) until done or the daemon stops answering;
    every ok reply is recorded as it arrives, so a crash keeps them."""
    cl = Client(endpoint)
    by_req = {}
    inflight = 0
    it = iter(enumerate(reqs))
    done = False
    while not done or inflight:
        while not done and inflight < 300:
            try:
                i, m = next(it)
            except StopIteration:
                done = True
                break
            m = dict(m, req=i)
            by_req[i] = m
            cl.send(m)
            inflight += 1
        r = cl.recv(2.0)
        if r is None:
            break  # the daemon is gone
        inflight -= 1
        replies_seen.append(r)
        if r.get("ok"):
            acked[r["req"]] = r
    cl.close()


def check_history(c, cl, label):
    """Every shard's log from 0: contiguous seq.  Returns {shard: events}."""
    out = {}
    for sh in range(SHARDS):
        evs = cl.history_all(sh)
        seqs = [e["seq"] for e in evs]
        contiguous = seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True
        c.ok(contiguous, f"{label}: shard {sh} seq contiguous ({len(seqs)} events)",
             [s for a, s in zip(seqs, seqs[1:]) if s != a + 1][:5])
        c.ok(not seqs or seqs[0] <= 1, f"{label}: shard {sh} log starts at seq 0/1", seqs[:3])
        c.ok(all(e.get("shard") == sh for e in evs), f"{label}: shard {sh} events say so")
        out[sh] = evs
    return out


def main(c):
    rnd = fqlib.seeded("ingest_restart", 777)
    d = Daemon(shards=SHARDS, extra=["--no-dispatch"], accounts=["a", "acct1"])
    d.start()
    all_acked = {}  # key -> (request, reply)
    for rnd_no in range(ROUNDS):
        reqs = [make_request(rnd_no, i) for i in range(PER_ROUND)]
        acked, seen = {}, []
        th = threading.Thread(target=produce, args=(d.endpoint, reqs, acked, seen), daemon=True)
        # Kill at a seeded point of the stream (a number of acks, not a
        # time: how far a fixed delay gets depends on the machine's speed).
        target = int(PER_ROUND * rnd.uniform(0.05, 0.6))
        t0 = time.monotonic()
        th.start()
        while len(acked) < target and th.is_alive() and time.monotonic() - t0 < 60:
            time.sleep(0.0005)
        delay = time.monotonic() - t0
        d.kill9()
        th.join(30)
        fqlib.log(f"round {rnd_no}: kill -9 after {delay:.3f} s (target {target} acks): "
                  f"{len(acked)} acked, {len(seen)} replies of {PER_ROUND}")
        c.ok(0 < len(acked) < PER_ROUND, f"round {rnd_no}: the kill landed mid-stream")
        c.ok(all(r.get("ok") for r in seen), f"round {rnd_no}: no error replies before the kill",
             [r for r in seen if not r.get("ok")][:2])
        for i, r in acked.items():
            all_acked[reqs[i]["key"]] = (reqs[i], r)

        d.start()
        cl = Client(d.endpoint, timeout=30)
        # every acked command (from every round so far) is there, queued
        items = list(all_acked.values())
        greps, gorder = pipeline(cl, [{"op": "get", "id": r["id"]} for _, r in items],
                                 window=300, timeout=180)
        missing = wrong = 0
        for (m, r), q in zip(items, gorder):
            g = greps[q]
            cmd = g.get("command", {})
            if not g.get("ok"):
                missing += 1
                if missing <= 3:
                    fqlib.log(f"  lost: {m['key']} {r['id']}: {g}")
            elif (cmd.get("key"), cmd.get("tenant"), cmd.get("command"), cmd.get("state")) != \
                    (m["key"], m["tenant"], m["command"], "queued"):
                wrong += 1
        c.eq(missing, 0, f"round {rnd_no}: acked commands lost ({len(items)} acked so far)")
        c.eq(wrong, 0, f"round {rnd_no}: acked commands with wrong content/state")

        # dedupe still answers: same id, dup true
        sample = rnd.sample(items, min(500, len(items)))
        dreps, dorder = pipeline(cl, [m for m, _ in sample], window=300, timeout=120)
        bad = [(m["key"], r["id"], dreps[q]) for (m, r), q in zip(sample, dorder)
               if not (dreps[q].get("ok") and dreps[q].get("dup") is True
                       and dreps[q].get("id") == r["id"])]
        c.eq(bad[:3], [], f"round {rnd_no}: resubmitting acked commands gives dup + same id")

        # unacked requests: either stored (dup) or not (new) -- but from now
        # on one command per key
        unacked = [m for i, m in enumerate(reqs) if i not in acked][:300]
        ureps, uorder = pipeline(cl, unacked, window=300, timeout=120)
        ureps2, uorder2 = pipeline(cl, unacked, window=300, timeout=120)
        incons = [(m["key"], ureps[a], ureps2[b]) for m, a, b in zip(unacked, uorder, uorder2)
                  if not (ureps[a].get("ok") and ureps2[b].get("dup") is True
                          and ureps[a].get("id") == ureps2[b].get("id"))]
        c.eq(incons[:3], [], f"round {rnd_no}: unacked keys settle to one command")
        for m, a in zip(unacked, uorder):
            if ureps[a].get("ok"):
                all_acked[m["key"]] = (m, ureps[a])

        # seq: contiguous per shard, each stored command has its queued
        # event, and a new event continues right after the last one
        logs = check_history(c, cl, f"round {rnd_no}")
        queued_ids = {e["id"] for evs in logs.values() for e in evs if e.get("state") == "queued"}
        noev = [k for k, (_, r) in all_acked.items() if r["id"] not in queued_ids]
        c.eq(noev[:3], [], f"round {rnd_no}: every stored command has its queued event")
        last = {sh: (evs[-1]["seq"] if evs else 0) for sh, evs in logs.items()}
        probe = cl.submit("probe", f"probe-{rnd_no}", vin_=vin(999 + rnd_no))
        g = cl.get(probe.get("id")).get("command", {})
        sh = g.get("shard")
        if sh is None:
            sh = next(s for s, evs in check_history(c, cl, "probe").items()
                      if evs and evs[-1].get("id") == probe.get("id"))
        tail = cl.history(sh, after=last[sh]).get("events", [])
        c.ok(tail and tail[0].get("seq") == last[sh] + 1 and tail[0].get("id") == probe.get("id"),
             f"round {rnd_no}: seq continues after restart (shard {sh}, last {last[sh]})",
             tail[:1])
        cl.close()

    # SIGTERM while producing: drains, exits 0, acked commands survive
    reqs = [make_request(ROUNDS, i) for i in range(PER_ROUND)]
    acked, seen = {}, []
    th = threading.Thread(target=produce, args=(d.endpoint, reqs, acked, seen), daemon=True)
    th.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    rc = d.term(timeout=30)
    took = time.monotonic() - t0
    th.join(30)
    fqlib.log(f"SIGTERM: exit {rc} after {took:.2f} s, {len(acked)} acked")
    c.eq(rc, 0, "SIGTERM: exit status 0")
    c.ok(took < 15, f"SIGTERM: exits promptly ({took:.2f} s)")
    d.start()
    cl = Client(d.endpoint, timeout=30)
    ids = [r["id"] for r in acked.values()]
    greps, gorder = pipeline(cl, [{"op": "get", "id": i} for i in ids], window=300, timeout=120)
    lost = [ids[n] for n, q in enumerate(gorder) if not greps[q].get("ok")]
    c.eq(lost[:3], [], f"SIGTERM: all {len(ids)} acked commands present after restart")
    check_history(c, cl, "after SIGTERM")
    c.eq(cl.ping().get("ok"), True, "daemon serves after the last restart")
    cl.close()
    c.eq(d.term(), 0, "final SIGTERM exits 0")
    d.cleanup()


fqlib.run_test("ingest_restart", main)
