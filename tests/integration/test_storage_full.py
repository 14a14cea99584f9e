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
import subprocess
import time

from lib import dispatch as dl
from lib import fqlib

CARS = [dl.vin(1320 + i) for i in range(12)]
SLOW = {"latency": {"fixed_ms": 4000, "jitter_ms": 0}}
FAST = {"latency": {"fixed_ms": 0, "jitter_ms": 0}}
OPTS = {"--http-timeout-ms": 10000}


class Fill:
    """Pipelined submits (long keys, four cars, every tenth a honk) until
    `after_full` of them were refused with storage_full."""

    def __init__(self, tag):
        self.tag = tag
        self.n = 0
        self.accepted = []   # (request, reply)
        self.full = []       # replies
        self.no_req = []     # replies without their req
        self.other = []

    def request(self, i):
        car = CARS[i % len(CARS)]
        key = f"{self.tag}-{i:06d}-" + "k" * 90
        if i % 10 == 0:
            return {"op": "submit", "tenant": dl.TENANT, "key": key, "account": "acct1",
                    "vin": car, "command": "honk_horn"}
        return {"op": "submit", "tenant": dl.TENANT, "key": key, "account": "acct1", "vin": car,
                "command": "set_charge_limit", "params": {"percent": 50 + i % 50}}

    def probe(self, k, req):
        """A submit beyond the fill, never a honk (those are counted)."""
        m = self.request(self.n + k if (self.n + k) % 10 else self.n + k + 1)
        m["req"] = req
        return m

    def run(self, w, after_full=300, most=40000, timeout=120):
        inflight = {}
        t_end = time.monotonic() + timeout
        while (len(self.full) < after_full and self.n < most) or inflight:
            while len(self.full) < after_full and self.n < most and len(inflight) < 300:
                m = self.request(self.n)
                self.n += 1
                m["req"] = w.client.next_req()
                w.client.send(m)
                inflight[m["req"]] = m
            r = w.client.recv(max(1.0, t_end - time.monotonic()))
            if r is None:
                raise TimeoutError(f"{len(inflight)} submits unanswered")
            m = inflight.pop(r.get("req"), None)
            if m is None:
                self.no_req.append(r)
            elif r.get("ok"):
                self.accepted.append((m, r))
                w.events.setdefault(r["id"], [])
            elif r.get("error") == "storage_full":
                self.full.append(r)
            else:
                self.other.append(r)
        fqlib.log(f"[{self.tag}] {self.n} submits: {len(self.accepted)} stored, "
                  f"{len(self.full)} storage_full")
        return self

    def check(self, c, why):
        c.eq(self.no_req, [], f"[{self.tag}] every reply carries its req")
        c.eq(self.other, [], f"[{self.tag}] no other error")
        c.ok(self.full, f"[{self.tag}] storage_full came")
        for r in self.full[:3] + self.full[-3:]:
            c.ok(why in r.get("message", ""), f"[{self.tag}] storage_full says why", r)


class Ends:
    """Each command's last stored event, read from history a page at a time
    after the last seq seen (the World's helpers read all of it each time,
    too slow for tens of thousands of events)."""

    def __init__(self, w):
        self.w = w
        self.after = 0
        self.last = {}

    def poll(self):
        while True:
            r = self.w.client.history(0, self.after, 1000)
            if not r.get("ok") or not r["events"]:
                return
            for e in r["events"]:
                self.last[e["id"]] = e
            self.after = r["events"][-1]["seq"]

    def wait(self, ids, timeout):
        t_end = time.monotonic() + timeout
        while True:
            self.poll()
            left = [i for i in ids if self.last.get(i, {}).get("state") not in dl.TERMINAL]
            if not left or time.monotonic() >= t_end:
                return left
            time.sleep(0.5)


def honks_at_most_once(c, w, ends, ids):
    per = {v: [0, 0, 0] for v in CARS}  # accepted, succeeded, unknown
    for i in ids:
        ev = ends.last.get(i)
        if ev and ev["command"] == "honk_horn":
            per[ev["vin"]][0] += 1
            per[ev["vin"]][1] += ev["state"] == "succeeded"
            per[ev["vin"]][2] += ev["state"] == "unknown"
    for v, (n, ok, unk) in per.items():
        x = sum(1 for e in w.execs(v) if e["command"] == "honk_horn")
        c.ok(ok <= x <= ok + unk, f"car {v}: {x} honks executed for {ok} succeeded, "
             f"{unk} unknown of {n}")


def part_map(c):
    w = dl.World("test_storage_full map", vehicles=[dl.default_vehicle(v) for v in CARS],
                 shards=1, daemon_opts=dict(OPTS, **{"--map-size-mb": 16}))
    try:
        for v in CARS:
            w.sim.patch_vehicle(v, SLOW)  # one command in flight per car, the rest queued
        f = Fill("map").run(w)
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
        honks_at_most_once(c, w, ends, ids)
        n = w.client.call(f.probe(5, 7004))
        c.ok(n.get("ok") and n.get("req") == 7004, "room again once they ended", n)
        w.check_seq(c)

        # Full again; then --max-store-mb lets the map grow: stored again.
        for v in CARS:
            w.sim.patch_vehicle(v, SLOW)
        f2 = Fill("map2").run(w, after_full=100)
        f2.check(c, "high-water mark")
        w.daemon.extra += ["--max-store-mb", "24"]
        w.restart_daemon(kill9=False)
        f3 = Fill("map3").run(w, after_full=100)
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
        honks_at_most_once(c, w, ends, [r["id"] for _, r in f.accepted] + ids)
        w.check_seq(c)
    finally:
        rc_d, rc_s = w.close()
        c.eq(rc_d, 0, "fleetqd exits 0 on SIGTERM")
        c.eq(rc_s, 0, "fleetsim exits 0")


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                       capture_output=True, text=True)
    return r.returncode == 0, (r.stderr or r.stdout).strip()


def part_disk(c):
    w = dl.World("test_storage_full disk", vehicles=[dl.default_vehicle(v) for v in CARS],
                 shards=1, daemon_opts=dict(OPTS, **{"--map-size-mb": 64}), start=False)
    mnt = os.path.join(w.tmp, "disk")
    ok, why = mount_tmpfs(mnt, "16m") if os.geteuid() == 0 else (False, "not root")
    if not ok:
        fqlib.log(f"SKIP the disk-full part: cannot mount a tmpfs ({why}); the map-full part ran")
        w.close()
        return
    fqlib._cleanups.append(lambda: subprocess.run(["umount", "-l", mnt], capture_output=True))
    try:
        w.daemon.data = os.path.join(mnt, "data")
        w.start()
        for v in CARS:
            w.sim.patch_vehicle(v, SLOW)
        f = Fill("disk").run(w)
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
        honks_at_most_once(c, w, ends, ids)
        # Room comes back: stored again, without a restart.
        r = subprocess.run(["mount", "-o", "remount,size=96m", mnt], capture_output=True,
                           text=True)
        c.eq(r.returncode, 0, "remount larger", r.stderr)
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
