"""Helpers of the full-storage and retention tests (issue 13): fill a
shard's store until submits are refused with storage_full, follow each
command to its last stored event, count the honks the simulator ran, mount
a small tmpfs, and measure a shard's store from outside (mdb_stat, the
blocks of the data directory).

Used by tests/integration/test_storage_full.py, test_retention*.py and
tests/torture/torture_full.py."""
import os
import re
import subprocess
import time

from . import dispatch as dl
from . import fqlib


class Fill:
    """Pipelined submits (long keys, round-robin over `cars`, every
    `honk_every`-th a honk_horn, the rest set_charge_limit) until
    `after_full` of them were refused with storage_full.  `extra` is merged
    into each submit (e.g. a short ttl_ms)."""

    def __init__(self, tag, cars, honk_every=10, extra=None):
        self.tag = tag
        self.cars = list(cars)
        self.honk_every = honk_every
        self.extra = dict(extra or {})
        self.n = 0
        self.accepted = []   # (request, reply)
        self.full = []       # replies
        self.no_req = []     # replies without their req
        self.other = []

    def is_honk(self, i):
        return self.honk_every > 0 and i % self.honk_every == 0

    def request(self, i):
        car = self.cars[i % len(self.cars)]
        key = f"{self.tag}-{i:06d}-" + "k" * 90
        m = {"op": "submit", "tenant": dl.TENANT, "key": key, "account": "acct1", "vin": car}
        if self.is_honk(i):
            m["command"] = "honk_horn"
        else:
            m.update(command="set_charge_limit", params={"percent": 50 + i % 50})
        m.update(self.extra)
        return m

    def probe(self, k, req):
        """A submit beyond the fill, never a honk (those are counted): the
        k-th (k >= 1) non-honk after the fill, so each k is its own key."""
        i, left = self.n - 1, k
        while left > 0:
            i += 1
            left -= not self.is_honk(i)
        m = self.request(i)
        m["req"] = req
        return m

    def run(self, w, after_full=300, most=40000, timeout=120, window=300):
        inflight = {}
        t_end = time.monotonic() + timeout
        while (len(self.full) < after_full and self.n < most) or inflight:
            while len(self.full) < after_full and self.n < most and len(inflight) < window:
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

    def ids(self):
        return [r["id"] for _, r in self.accepted]

    def check(self, c, why):
        c.eq(self.no_req, [], f"[{self.tag}] every reply carries its req")
        c.eq(self.other, [], f"[{self.tag}] no other error")
        c.ok(self.full, f"[{self.tag}] storage_full came")
        for r in self.full[:3] + self.full[-3:]:
            c.ok(why in r.get("message", ""), f"[{self.tag}] storage_full says why", r)


class Ends:
    """Each command's last stored event, read from history a page at a time
    after the last seq seen (the World's helpers read all of it each time,
    too slow for tens of thousands of events).  One shard (shard 0)."""

    def __init__(self, w, lives=False):
        self.w = w
        self.after = 0
        self.last = {}
        self.missed = 0  # events retention pruned before they were read
        # lives=True: every command's (state, prev) pairs too, in seq order
        self.lives = {} if lives else None

    def poll(self):
        while True:
            r = self.w.client.history(0, self.after, 1000)
            if not r.get("ok") or not r["events"]:
                return
            self.missed += max(0, r["events"][0]["seq"] - self.after - 1)
            for e in r["events"]:
                self.last[e["id"]] = e
                if self.lives is not None:
                    self.lives.setdefault(e["id"], []).append((e["state"], e["prev"]))
            self.after = r["events"][-1]["seq"]

    def wait(self, ids, timeout):
        """The ids not terminal after at most `timeout` seconds."""
        t_end = time.monotonic() + timeout
        while True:
            self.poll()
            left = [i for i in ids if self.last.get(i, {}).get("state") not in dl.TERMINAL]
            if not left or time.monotonic() >= t_end:
                return left
            time.sleep(0.5)

    def states(self, ids):
        """How many of ids ended in each state."""
        out = {}
        for i in ids:
            st = self.last.get(i, {}).get("state")
            out[st] = out.get(st, 0) + 1
        return out


def honks_at_most_once(c, w, ends, ids, cars):
    """Per car, the honks the simulator executed are within [succeeded,
    succeeded + unknown] of the honks among ids.  Returns how many cars
    ran more honks than that (a honk run twice)."""
    per = {v: [0, 0, 0] for v in cars}  # accepted, succeeded, unknown
    for i in ids:
        ev = ends.last.get(i)
        if ev and ev["command"] == "honk_horn":
            per[ev["vin"]][0] += 1
            per[ev["vin"]][1] += ev["state"] == "succeeded"
            per[ev["vin"]][2] += ev["state"] == "unknown"
    twice = 0
    for v, (n, ok, unk) in per.items():
        x = sum(1 for e in w.execs(v) if e["command"] == "honk_horn")
        twice += x > ok + unk
        c.ok(ok <= x <= ok + unk, f"car {v}: {x} honks executed for {ok} succeeded, "
             f"{unk} unknown of {n}")
    return twice


def mount_tmpfs(path, size):
    """Mount a tmpfs of `size` (e.g. "16m") at path: (True, "") or (False,
    why not).  Needs root (CAP_SYS_ADMIN); a successful mount is unmounted
    at exit."""
    if os.geteuid() != 0:
        return False, "not root"
    os.makedirs(path, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                            path], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    if r.returncode != 0:
        return False, (r.stderr or r.stdout).strip()
    fqlib._cleanups.append(lambda: subprocess.run(["umount", "-l", path], capture_output=True))
    return True, ""


def resize_tmpfs(path, size):
    """Remount the tmpfs at path with a new size: (ok, stderr)."""
    # With -t and a source: in a user namespace (unshare -rm) mount(8)
    # refuses the short form ("mount point not mounted").
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"remount,size={size}", "tmpfs", path],
                       capture_output=True, text=True, timeout=20)
    return r.returncode == 0, r.stderr.strip()


def map_pages(shard_dir):
    """A shard's store from outside, with mdb_stat (lmdb-utils): (pages
    in use, pages the file has reached, page size).  In use is the file's
    pages less LMDB's free list, the pages pruning gives back and LMDB
    reuses before it extends the file."""
    r = subprocess.run(["mdb_stat", "-ef", shard_dir], capture_output=True, text=True,
                       timeout=20)
    if r.returncode != 0:
        raise RuntimeError(f"mdb_stat {shard_dir}: {r.stderr.strip()}")

    def num(label):
        m = re.search(label + r":\s*(\d+)", r.stdout)
        if not m:
            raise RuntimeError(f"mdb_stat {shard_dir}: no {label!r} in {r.stdout!r}")
        return int(m.group(1))

    reached, free, psize = num("Number of pages used"), num("Free pages"), num("Page size")
    return reached - free, reached, psize


def disk_bytes(path):
    """Bytes the files under path hold on the disk (their blocks, which
    include what fleetqd allocated ahead), like `du`."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total
