#!/usr/bin/python3
"""Issue 2, per-device FIFO: 4 concurrent producers (threads, one DEALER
each) pipeline commands for 50 devices.  Every command is acked; per device,
the `queued` events (ascending seq within the device's shard) list each
producer's commands in that producer's send order, and `get` agrees.  The
PUB stream carries the same events as the durable log."""

import threading

from lib import fqlib
from lib.fqlib import Client, Daemon, Sub, pipeline, vin

DEVICES = 50
PRODUCERS = 4
PER_DEVICE = 5  # commands per producer per device


def producer(endpoint, p, rnd_seed, out):
    import random
    rnd = random.Random(rnd_seed)
    # Each producer interleaves devices in its own shuffled order, but keeps
    # each device's own commands in ascending i.
    plan = [(dv, i) for i in range(PER_DEVICE) for dv in range(DEVICES)]
    rnd.shuffle(plan)
    nexti = [0] * DEVICES
    seq = []
    for dv, _ in plan:
        seq.append((dv, nexti[dv]))
        nexti[dv] += 1
    cl = Client(endpoint)
    reqs = [{"op": "submit", "tenant": "ord", "key": f"p{p}-d{dv}-{i}", "account": "a",
             "vin": vin(dv), "command": "set_charging_amps",
             "params": {"charging_amps": 1 + i}} for dv, i in seq]
    replies, order = pipeline(cl, reqs, window=200, timeout=120)
    out[p] = (seq, [replies[r] for r in order])
    cl.close()


def main(c):
    rnd = fqlib.seeded("ingest_order", 2024)
    with Daemon(shards=4, extra=["--no-dispatch"], accounts=["a"]) as d:
        sub = Sub(d.publish, ["ord/"])
        out = {}
        ths = [threading.Thread(target=producer, args=(d.endpoint, p, rnd.randrange(1 << 30), out))
               for p in range(PRODUCERS)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(180)
        c.eq(sorted(out), list(range(PRODUCERS)), "every producer finished")
        total = DEVICES * PRODUCERS * PER_DEVICE
        acked = {}
        bad = []
        for p, (seq, reps) in out.items():
            for (dv, i), r in zip(seq, reps):
                if r.get("ok") and r.get("state") == "queued" and r.get("dup") is False:
                    acked[(p, dv, i)] = r["id"]
                else:
                    bad.append(r)
        c.eq(len(acked), total, "all commands acked queued", bad[:3])
        c.eq(len(set(acked.values())), total, "all ids distinct")

        # The durable log is the reference: every shard from seq 0.
        cl = Client(d.endpoint)
        events = []
        for sh in range(4):
            events += cl.history_all(sh)
        queued = [e for e in events if e.get("state") == "queued" and e.get("tenant") == "ord"]
        c.eq(len(queued), total, "one queued event per command in history")
        by_id = {e["id"]: e for e in queued}
        key_of = {v: k for k, v in acked.items()}

        # Per device, one shard; seq ascending must follow each producer's order.
        per_dev = {}
        for e in queued:
            k = key_of.get(e["id"])
            if k:
                per_dev.setdefault(k[1], []).append((e["seq"], e["shard"], k[0], k[2]))
        order_bad = shard_bad = 0
        for dv, lst in per_dev.items():
            lst.sort()
            if len({s for _, s, _, _ in lst}) != 1:
                shard_bad += 1
            for p in range(PRODUCERS):
                mine = [i for _, _, pp, i in lst if pp == p]
                if mine != list(range(PER_DEVICE)):
                    order_bad += 1
                    if order_bad <= 3:
                        fqlib.log(f"  device {dv} producer {p}: queue order {mine}")
        c.eq(shard_bad, 0, "each device's commands live in one shard")
        c.eq(order_bad, 0, "per-device FIFO matches each producer's send order")

        # get agrees: state queued, same shard; queue_seq (when exposed)
        # follows the event order.
        reqs = [{"op": "get", "id": i} for i in acked.values()]
        greps, gorder = pipeline(cl, reqs, window=300, timeout=120)
        gets = {greps[r]["command"]["id"]: greps[r]["command"] for r in gorder
                if greps[r].get("ok")}
        c.eq(len(gets), total, "get finds every command")
        c.eq(sum(1 for g in gets.values() if g.get("state") != "queued"), 0, "all still queued")
        if gets and all("queue_seq" in g for g in gets.values()):
            qbad = 0
            for dv, lst in per_dev.items():
                ids = [acked[(p, dv, i)] for _, _, p, i in lst]
                qs = [gets[x]["queue_seq"] for x in ids if x in gets]
                if qs != sorted(qs):
                    qbad += 1
            c.eq(qbad, 0, "queue_seq order equals event order per device")

        # The PUB stream delivered the same events (no drops at this volume).
        got = sub.collect(n=total, timeout=5)
        pub = {ev["id"]: ev for _, ev in got if ev.get("state") == "queued"}
        c.eq(len(pub), total, "every queued event was published")
        diff = [i for i, ev in pub.items() if by_id.get(i) != ev]
        c.eq(diff[:3], [], "published events equal the stored ones")
        topics_bad = [(t, ev) for t, ev in got if t != f"ord/{ev.get('vin')}"]
        c.eq(topics_bad[:2], [], "topic is tenant/vin")
        sub.close()
        cl.close()


fqlib.run_test("ingest_order", main)
