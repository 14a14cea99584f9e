"""Issue 13, defect 2: full storage never stops fleetqd.

Map full (--map-size-mb 16, one shard, fleetsim behind): submits are
stored up to the map's high-water mark, then answered storage_full, each
with its `req`; the daemon stays up; get, history, a duplicate submit and
a cancel still work; a kill -9 and a restart on the full store start and
serve; every accepted command reaches its end with fleetsim (honks
executed at most once); then there is room again; and with
--max-store-mb the map grows and submits are accepted again.

Disk full (a 16 MiB tmpfs under a 64 MiB map; needs root for the mount,
else that part is skipped with a message): submits get storage_full (the
disk has no room) with their `req`, the daemon stays up, reads, cancels
and the accepted commands go on (their room is reserved on the disk),
and once the filesystem has room again submits are stored again without
a restart."""
import os
import time

from lib import dispatch as dl
from lib import fqlib
from lib.storage import Ends, Fill, honks_at_most_once, mount_tmpfs, resize_tmpfs

CARS = [dl.vin(1320 + i) for i in range(12)]
SLOW = {"latency": {"fixed_ms": 4000, "jitter_ms": 0}}
FAST = {"latency": {"fixed_ms": 0, "jitter_ms": 0}}
OPTS = {"--http-timeout-ms": 10000}


def part_map(c):
    w = dl.World("test_storage_full map", vehicles=[dl.default_vehicle(v) for v in CARS],
                 shards=1, daemon_opts=dict(OPTS, **{"--map-size-mb": 16}))
    try:
        for v in CARS:
            w.sim.patch_vehicle(v, SLOW)  # one command in flight per car, the rest queued
        f = Fill("map", CARS).run(w)
        f.check(c, "high-water mark")
        c.ok(len(f.accepted) > 3000, "thousands stored before the mark", len(f.accepted))
        c.ok(w.daemon.alive(), "fleetqd is up")
        first, last = f.accepted[0], f.accepted[-1]
        g = w.client.get(first[1]["id"])
        c.ok(g.get("ok") and g["command"]["id"] == first[1]["id"], "get works when full", g)
        h = w.client.history(0, 0, 100)
        c.ok(h.get("ok") and len(h["events"]) == 100, "history works when full", h.get("error"))
        d = w.client.call(dict(first[0], req=7001))
        c.ok(d.get("ok") and d.get("dup") and d.get("req") == 7001, "a duplicate is answered", d)
        n = w.client.call(f.probe(1, 7002))
        c.ok(n.get("error") == "storage_full" and n.get("req") == 7002,
             "a new submit: storage_full with its req", n)
        x = w.client.cancel(last[1]["id"])
        c.ok(x.get("ok") and x["command"]["state"] == "cancelled", "a queued command is "
             "cancelled when full", x)

        # kill -9 and a restart on the full store: it starts and serves.
        w.restart_daemon(kill9=True)
        g = w.client.get(first[1]["id"])
        c.ok(g.get("ok"), "get after a restart on the full store", g)
        n = w.client.call(f.probe(3, 7003))
        c.ok(n.get("error") == "storage_full" and n.get("req") == 7003,
             "after the restart still storage_full with req", n)

        # Every accepted command reaches its end (their room was kept).
        for v in CARS:
            w.sim.patch_vehicle(v, FAST)
        ends = Ends(w)
        ids = [r["id"] for _, r in f.accepted]
        left = ends.wait(ids, 240)
        c.eq(left[:5], [], "every accepted command ends")
        c.ok(w.daemon.alive(), "fleetqd is up after the load")
        w.fill_from_history()
        for i in ids[:300:7] + ids[-300::7]:
            w.check_events(c, i)
        honks_at_most_once(c, w, ends, ids, CARS)
        n = w.client.call(f.probe(5, 7004))
        c.ok(n.get("ok") and n.get("req") == 7004, "room again once they ended", n)
        w.check_seq(c)

        # Full again; then --max-store-mb lets the map grow: stored again.
        for v in CARS:
            w.sim.patch_vehicle(v, SLOW)
        f2 = Fill("map2", CARS).run(w, after_full=100)
        f2.check(c, "high-water mark")
        w.daemon.extra += ["--max-store-mb", "24"]
        w.restart_daemon(kill9=False)
        f3 = Fill("map3", CARS).run(w, after_full=100)
        f3.check(c, "high-water mark")
        c.ok(len(f3.accepted) > len(f.accepted) // 3, "the grown map stores more",
             len(f3.accepted), len(f.accepted))
        logs = w.daemon.log_tail(400)
        c.ok("map grown from 16.0 MiB to 24.0 MiB" in logs, "the map grew to --max-store-mb",
             logs[-2000:])
        c.ok("fatal" not in logs, "nothing fatal in the log")
        for v in CARS:
            w.sim.patch_vehicle(v, FAST)
        ids = [r["id"] for _, r in f2.accepted + f3.accepted]
        c.eq(ends.wait(ids, 240)[:5], [], "every accepted command ends (grown map)")
        honks_at_most_once(c, w, ends, [r["id"] for _, r in f.accepted] + ids, CARS)
        w.check_seq(c)
    finally:
        rc_d, rc_s = w.close()
        c.eq(rc_d, 0, "fleetqd exits 0 on SIGTERM")
        c.eq(rc_s, 0, "fleetsim exits 0")


def part_disk(c):
    w = dl.World("test_storage_full disk", vehicles=[dl.default_vehicle(v) for v in CARS],
                 shards=1, daemon_opts=dict(OPTS, **{"--map-size-mb": 64}), start=False)
    mnt = os.path.join(w.tmp, "disk")
    ok, why = mount_tmpfs(mnt, "16m")
    if not ok:
        fqlib.log(f"SKIP the disk-full part: cannot mount a tmpfs ({why}); the map-full part ran")
        w.close()
        return
    try:
        w.daemon.data = os.path.join(mnt, "data")
        w.start()
        for v in CARS:
            w.sim.patch_vehicle(v, SLOW)
        f = Fill("disk", CARS).run(w)
        f.check(c, "disk full")
        c.ok(len(f.accepted) > 1000, "stored until the disk was full", len(f.accepted))
        c.ok(w.daemon.alive(), "fleetqd is up on a full disk")
        first, last = f.accepted[0], f.accepted[-1]
        g = w.client.get(first[1]["id"])
        c.ok(g.get("ok"), "get works on a full disk", g)
        h = w.client.history(0, 0, 50)
        c.ok(h.get("ok") and len(h["events"]) == 50, "history works on a full disk")
        x = w.client.cancel(last[1]["id"])
        c.ok(x.get("ok") and x["command"]["state"] == "cancelled", "cancel works on a full disk",
             x)
        for v in CARS:
            w.sim.patch_vehicle(v, FAST)
        ids = [r["id"] for _, r in f.accepted]
        ends = Ends(w)
        c.eq(ends.wait(ids, 240)[:5], [], "every accepted command ends on the full disk")
        honks_at_most_once(c, w, ends, ids, CARS)
        # Room comes back: stored again, without a restart.
        ok, why = resize_tmpfs(mnt, "96m")
        c.ok(ok, "remount larger", why)
        stored, t_end, k = None, time.monotonic() + 15, 0
        while stored is None and time.monotonic() < t_end:
            k += 1
            n = w.client.call(f.probe(2 * k, 8000 + k))
            c.ok(n.get("ok") or n.get("error") == "storage_full", "stored or storage_full", n)
            if n.get("ok"):
                stored = n
            else:
                time.sleep(0.2)
        c.ok(stored is not None, "stored again once the disk has room")
        c.ok(w.daemon.alive(), "fleetqd is up")
        c.ok("fatal" not in w.daemon.log_tail(400), "nothing fatal in the log")
        w.check_seq(c)
    finally:
        rc_d, rc_s = w.close()
        c.eq(rc_d, 0, "fleetqd exits 0 on SIGTERM")
        c.eq(rc_s, 0, "fleetsim exits 0")


def main(c):
    part_map(c)
    part_disk(c)


fqlib.run_test("test_storage_full", main)
