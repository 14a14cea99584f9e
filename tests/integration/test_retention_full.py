#!/usr/bin/python3
"""Issue 13, defects 2 and 3 together: pruning frees room in a full map.

One shard, --map-size-mb 16, --no-dispatch, --retention-s 14.  Submits with
a 50 ms ttl fill the store up to its high-water mark; they expire (a
terminal state) and a top-up fills it again, so that what holds the map is
terminal commands and their events, not the reserve of queued ones.  Then:

* new submits get storage_full (with their `req`) until the retention is
  due: room does not come from anywhere else;
* once the retention pruned the first commands, new submits are accepted
  again, without a restart;
* `get` of a pruned command is not_found; `history` says where retained
  history begins (`first`), by seq and by tenant tseq;
* the pages pruning freed are reused: once the whole first fill is pruned,
  a second fill stores about as many commands as the first, while the data
  file does not grow.  A high-water mark that counted the file's size (or
  its highest page) instead of the pages in use would refuse it all.
"""
import os
import time
from types import SimpleNamespace

from lib import dispatch as dl
from lib import fqlib
from lib.storage import Fill, map_pages

RETENTION_S = 14
WINDOW_S = RETENTION_S  # keys leave with their commands: no room comes earlier
TTL_MS = 50
CARS = [dl.vin(1340 + i) for i in range(16)]


def probe_until_ok(c, w, f, base_req, timeout):
    """Submit one probe every 0.25 s until one is stored: (reply, when) or
    (None, None); every refusal must be storage_full with its req."""
    t_end = time.monotonic() + timeout
    k = 0
    while time.monotonic() < t_end:
        k += 1
        r = w.client.call(f.probe(k, base_req + k))
        if r.get("ok"):
            return r, time.monotonic()
        if not c.ok(r.get("error") == "storage_full" and r.get("req") == base_req + k,
                    "a refused probe is storage_full with its req", r):
            return None, None
        time.sleep(0.25)
    return None, None


def main(c):
    d = fqlib.Daemon(shards=1, accounts=["acct1"],
                     extra=["--no-dispatch", "--map-size-mb", "16",
                            "--retention-s", str(RETENTION_S),
                            "--dedupe-window-s", str(WINDOW_S)])
    d.start()
    w = SimpleNamespace(client=fqlib.Client(d.endpoint, timeout=15), events={})
    shard_dir = os.path.join(d.data, "shard-0")
    try:
        t0 = time.monotonic()
        f = Fill("fill", CARS, honk_every=0, extra={"ttl_ms": TTL_MS}).run(w, after_full=200)
        f.check(c, "high-water mark")
        # The fill's queued commands expire; what they kept in reserve is
        # free again.  Top-ups take it until one stores nothing: then the
        # map holds terminal commands and their events only.
        tops, n = [], f.n
        for _ in range(20):
            time.sleep(TTL_MS / 1000 + 0.3)
            top = Fill(f"top{len(tops)}", CARS, honk_every=0, extra={"ttl_ms": TTL_MS})
            top.n = n
            top.run(w, after_full=20)
            top.check(c, "high-water mark")
            n = top.n
            tops.append(top)
            if not top.accepted:
                break
        c.eq(len(tops[-1].accepted), 0, "top-ups fill what the reserve of the expired left",
             [len(t.accepted) for t in tops])
        top = Fill("tops", CARS)
        top.n = n
        top.accepted = [a for t in tops for a in t.accepted]
        t_full = time.monotonic() - t0
        fqlib.log(f"full after {t_full:.1f} s: {len(f.accepted)} + {len(top.accepted)} stored")
        c.ok(t_full < RETENTION_S - 4, "the fill ends well before the retention is due",
             t_full)
        c.ok(len(f.accepted) > 3000, "thousands stored before the mark", len(f.accepted))
        time.sleep(TTL_MS / 1000 + 0.3)
        used_full, reached_full, psize = map_pages(shard_dir)
        fqlib.log(f"full: {used_full} pages in use, file reached {reached_full} "
                  f"({psize}-byte pages)")
        r = w.client.call(f.probe(1, 1000001))
        c.ok(r.get("error") == "storage_full" and r.get("req") == 1000001,
             "every command terminal, the map still full: storage_full with its req", r)
        c.ok(d.alive(), "fleetqd is up")

        # Room comes back by pruning alone.
        r, t_ok = probe_until_ok(c, w, f, 1000100, RETENTION_S + 60)
        c.ok(r is not None and r.get("req") is not None, "a new submit is stored again "
             "once the retention pruned", r)
        if t_ok is not None:
            fqlib.log(f"stored again {t_ok - t0:.1f} s after the fill began")
            c.ok(t_ok - t0 >= RETENTION_S - 1, "not before the retention was due",
                 t_ok - t0, RETENTION_S)
        first_id, last_id = f.accepted[0][1]["id"], (top.accepted or f.accepted)[-1][1]["id"]
        # Pruning runs per shard in bounded steps: the first command may sit
        # on a shard a step behind the one that took the probe, so it is
        # asked until pruned (well before the retention's second round).
        got = []

        def first_pruned():
            got[:] = [w.client.call({"op": "get", "id": first_id, "req": 1000201})]
            return got[0].get("error") == "not_found"

        fqlib.wait_for(first_pruned, timeout=10, step=0.2)
        g = got[0]
        c.eq((g.get("error"), g.get("req")), ("not_found", 1000201),
             "get of a pruned command: not_found")
        h = w.client.history(0, after=0, limit=10)
        c.ok(h.get("ok") and isinstance(h.get("first"), int) and h["first"] > 1,
             "history says where retained history begins", h.get("first"), h.get("error"))
        c.ok(h.get("events") and h["events"][0]["seq"] == h.get("first"),
             "the page starts at `first`", h.get("first"), h.get("events", [])[:1])
        ht = w.client.history(0, after=0, limit=10, tenant=dl.TENANT)
        c.ok(ht.get("ok") and isinstance(ht.get("first"), int) and ht["first"] > 1,
             "history by tenant begins later too", ht.get("first"), ht.get("error"))

        # The whole first fill and its top-up go; their pages are reused.
        gone = fqlib.wait_for(lambda: w.client.get(last_id).get("error") == "not_found",
                              timeout=RETENTION_S + 30, step=0.5)
        c.ok(gone, "the whole first fill is pruned in time")
        used_pruned, reached_pruned, _ = map_pages(shard_dir)
        fqlib.log(f"pruned: {used_pruned} pages in use, file reached {reached_pruned}")
        c.ok(used_pruned < used_full // 4, "pruning gave the pages back",
             used_pruned, used_full)
        again = Fill("again", CARS, honk_every=0, extra={"ttl_ms": TTL_MS})
        again.n = top.n + 1000
        again.run(w, after_full=100)
        again.check(c, "high-water mark")
        first_round = len(f.accepted) + len(top.accepted)
        c.ok(len(again.accepted) >= first_round * 0.8, "a second fill stores about as much "
             "as the first: the freed pages are reused", len(again.accepted), first_round)
        used_again, reached_again, _ = map_pages(shard_dir)
        fqlib.log(f"full again: {used_again} pages in use, file reached {reached_again}")
        c.ok(reached_again <= reached_full + 16 * 1024 * 1024 // psize // 20,
             "the data file did not grow to hold the second fill", reached_again,
             reached_full)
        c.ok(d.alive(), "fleetqd is up")
        c.ok("fatal" not in d.log_tail(400), "nothing fatal in the log")
    finally:
        w.client.close()
        c.eq(d.term(), 0, "fleetqd exits 0 on SIGTERM")


fqlib.run_test("test_retention_full", main)
