#!/usr/bin/python3
"""Issue 2, status events: a watcher subscribed while commands are submitted
gets events with every key of the spec, seq +1 per shard; history returns
exactly the events a consumer deliberately skipped; topic prefixes select a
tenant or one device."""

import time

from lib import fqlib
from lib.fqlib import EVENT_KEYS, Client, Daemon, Sub, vin


def main(c):
    with Daemon(shards=3, extra=["--no-dispatch"], accounts=["acct1"]) as d:
        cl = Client(d.endpoint)
        all_sub = Sub(d.publish)
        t1_sub = Sub(d.publish, ["t1/"])
        dev_sub = Sub(d.publish, [f"t1/{vin(5)}"])
        site_sub = Sub(d.publish, ["t10/77"])

        t0 = int(time.time() * 1000)
        sent = []
        for i in range(60):
            tenant = "t1" if i % 2 else "t10"  # "t1/" must not match "t10/..."
            if i % 6 == 0:
                r = cl.submit(tenant, f"ev-{i}", command="storm_mode", site=77 + i % 2,
                              params={"enabled": True})
            else:
                r = cl.submit(tenant, f"ev-{i}", vin_=vin(i % 7), command="door_lock")
            c.ok(r.get("ok"), f"submit {i}", r)
            sent.append((tenant, r.get("id")))
        # a cancel adds a second event for one command
        cc = cl.cancel(sent[1][1])
        c.eq(cc.get("ok"), True, "cancel one")

        got = all_sub.collect(n=61, timeout=3)
        c.eq(len(got), 61, "60 queued + 1 cancelled event published")
        ids = [ev.get("id") for _, ev in got if ev.get("state") == "queued"]
        c.eq(sorted(ids), sorted(i for _, i in sent), "one queued event per command")

        missing_keys = []
        for topic, ev in got:
            dev = "vin" if "vin" in ev else "site"
            want = EVENT_KEYS | {dev}
            if set(ev) - {"vin", "site"} != EVENT_KEYS or ("vin" in ev) == ("site" in ev):
                missing_keys.append((sorted(want - set(ev)), sorted(set(ev) - want)))
            if topic != f"{ev.get('tenant')}/{ev.get(dev)}":
                missing_keys.append(("topic", topic, ev.get("tenant"), ev.get(dev)))
        c.eq(missing_keys[:3], [], "every event has exactly the spec's keys and its topic")

        sample = got[0][1]
        c.ok(isinstance(sample.get("at"), int) and abs(sample["at"] - t0) < 10000,
             "at is unix ms, now", sample)
        types_bad = [ev for _, ev in got if not (
            isinstance(ev.get("id"), str) and isinstance(ev.get("seq"), int)
            and isinstance(ev.get("shard"), int) and 0 <= ev["shard"] < 3
            and isinstance(ev.get("attempt"), int) and isinstance(ev.get("reason"), str)
            and (ev.get("error") is None or isinstance(ev["error"], str))
            and (ev.get("http") is None or isinstance(ev["http"], int))
            and (ev.get("fault") is None or isinstance(ev["fault"], int)))]
        c.eq(types_bad[:2], [], "event field types")
        q = [ev for _, ev in got if ev.get("state") == "queued"]
        c.ok(all(ev.get("prev") is None and ev.get("error") is None for ev in q),
             "queued events: prev nil, error nil", q[:1])
        cancel_ev = [ev for _, ev in got if ev.get("state") == "cancelled"]
        c.ok(len(cancel_ev) == 1 and cancel_ev[0].get("prev") == "queued",
             "cancelled event has prev queued", cancel_ev)

        # seq +1 per shard, in publish order
        per_shard = {}
        for _, ev in got:
            per_shard.setdefault(ev["shard"], []).append(ev["seq"])
        for sh, seqs in sorted(per_shard.items()):
            c.eq(seqs, list(range(seqs[0], seqs[0] + len(seqs))), f"shard {sh}: seq +1 each")

        # history returns exactly what a consumer skipped
        sh, seqs = max(per_shard.items(), key=lambda kv: len(kv[1]))
        pub = [ev for _, ev in got if ev["shard"] == sh]
        lo, hi = 2, min(len(pub) - 2, 9)  # pretend pub[lo:hi] were lost
        h = cl.history(sh, after=pub[lo - 1]["seq"], limit=hi - lo)
        c.eq(h.get("ok"), True, "history ok")
        c.eq(h.get("events"), pub[lo:hi], f"history fills the skipped range of shard {sh}")
        c.eq(h.get("next"), pub[hi - 1]["seq"], "history next = last seq returned")
        full = cl.history_all(sh)
        c.eq(full[-len(pub):], pub, "history from 0 ends with the published events")
        empty = cl.history(sh, after=pub[-1]["seq"])
        c.eq((empty.get("ok"), empty.get("events")), (True, []), "history after the end: empty")

        # topic filters
        t1 = t1_sub.collect(timeout=1)
        c.eq(sorted(ev["id"] for _, ev in t1),
             sorted(ev["id"] for _, ev in got if ev["tenant"] == "t1"), "tenant filter t1/")
        c.ok(all(t.startswith("t1/") for t, _ in t1), "t1/ never delivers t10")
        dv = dev_sub.collect(timeout=1)
        want = [ev["id"] for _, ev in got if ev["tenant"] == "t1" and ev.get("vin") == vin(5)]
        c.eq([ev["id"] for _, ev in dv], want, "device filter t1/<vin>")
        c.ok(len(want) > 0, "device filter test saw events", want)
        st = site_sub.collect(timeout=1)
        want = [ev["id"] for _, ev in got if ev["tenant"] == "t10" and ev.get("site") == 77]
        c.eq([ev["id"] for _, ev in st], want, "site filter t10/77")
        for s in (all_sub, t1_sub, dev_sub, site_sub):
            s.close()
        cl.close()


fqlib.run_test("ingest_events", main)
