#!/usr/bin/python3
"""Issue 17, restart time: the restart snapshot (store.c, docs/operations.md).

A clean stop (SIGTERM) writes each shard's dedupe table and queues to
shard-N/restart.snap (0600), stamped with the store's last LMDB transaction;
the next start loads it instead of scanning `idemlog` and `active`, and
deletes it.  It
must never be used for another store state:
  1. after a clean stop both shards start from their snapshot, which is
     gone once read; every command is served, every key dedupes to its
     command, the short-ttl commands expire after the restart;
  2. a run that writes and is killed (kill -9) leaves no snapshot; the one
     of the earlier clean stop, put back, is stale (the store was written
     since): ignored, the table rebuilt, and the keys of the killed run
     still dedupe (a stale table would let them create second commands);
  3. a damaged snapshot (one byte flipped) is ignored, the table rebuilt.
"""

import os
import re
import shutil
import stat
import time

from lib import fqlib
from lib.fqlib import Client, Daemon, pipeline, vin

N = 3000
CARS = 60
SHORT = 60
SHORT_TTL_MS = 6000
SHARDS = 2


def snaps(d):
    return [os.path.join(d.data, f"shard-{s}", "restart.snap") for s in range(SHARDS)]


def log_text(d):
    with open(d.logpath, errors="replace") as f:
        return f.read()


def submits(prefix, n, ttl_ms=3600000, tenant_mod=3):
    return [{"op": "submit", "tenant": f"t{i % tenant_mod}", "key": f"{prefix}{i}",
             "account": "acct1", "vin": vin(i % CARS), "command": "door_lock", "ttl_ms": ttl_ms}
            for i in range(n)]


def submit_all(c, cl, reqs, what):
    reps, order = pipeline(cl, reqs, window=500, timeout=120)
    c.eq(sum(1 for q in order if reps[q].get("ok") and not reps[q].get("dup")), len(reqs),
         f"{what}: every submit acked as new")
    return [reps[q].get("id") for q in order]


def check_dedupe(c, cl, reqs, ids, what):
    """Every key submitted again answers dup with its first command's id."""
    reps, order = pipeline(cl, reqs, window=500, timeout=120)
    bad = [(m["key"], reps[q]) for m, q, w in zip(reqs, order, ids)
           if not (reps[q].get("ok") and reps[q].get("dup") is True and reps[q].get("id") == w)]
    c.eq(bad[:3], [], f"{what}: every key dedupes to its command ({len(reqs)} keys)")


def check_served(c, cl, ids, what, state="queued"):
    reps, order = pipeline(cl, [{"op": "get", "id": i} for i in ids], window=500, timeout=120)
    bad = [(ids[k], reps[q]) for k, q in enumerate(order)
           if not reps[q].get("ok") or reps[q]["command"].get("state") != state]
    c.eq(bad[:3], [], f"{what}: every command served, {state} ({len(ids)})")


def main(c):
    d = Daemon(shards=SHARDS, extra=["--no-dispatch"], accounts=["acct1"])
    d.start()
    cl = Client(d.endpoint, timeout=60)
    reqs = submits("k", N)
    ids = submit_all(c, cl, reqs, "fill")
    t_short = time.time()
    sreqs = submits("s", SHORT, ttl_ms=SHORT_TTL_MS, tenant_mod=1)
    short_ids = submit_all(c, cl, sreqs, "short-ttl fill")
    cl.close()
    c.eq(d.term(), 0, "SIGTERM: exit 0")

    # 1. A clean stop leaves a snapshot per shard, private to fleetqd's user.
    for p in snaps(d):
        c.ok(os.path.exists(p), f"{p} written at the clean stop")
        if os.path.exists(p):
            c.eq(stat.S_IMODE(os.stat(p).st_mode), 0o600, f"{p} is mode 0600")
    keep = os.path.join(d.tmp, "kept")
    os.makedirs(keep)
    for s, p in enumerate(snaps(d)):
        if os.path.exists(p):
            shutil.copy(p, os.path.join(keep, f"{s}.snap"))

    d.start()
    text = log_text(d)
    c.eq(len(re.findall(r"loaded \(snapshot\) \d+ dedupe", text)), SHARDS, "both shards loaded their dedupe table from the "
         "snapshot", d.log_tail())
    c.eq(text.count("loaded (snapshot) the queues"), SHARDS,
         "both shards loaded their queues from the snapshot", d.log_tail())
    c.eq([p for p in snaps(d) if os.path.exists(p)], [], "the snapshots are deleted once read")
    cl = Client(d.endpoint, timeout=60)
    check_served(c, cl, ids, "after the restart from the snapshot")
    check_dedupe(c, cl, reqs, ids, "after the restart from the snapshot")
    check_dedupe(c, cl, sreqs, short_ids, "short-ttl keys after the restart from the snapshot")
    # New keys are new (the table holds no key it should not).
    fresh = submits("n", 50)
    fresh_ids = submit_all(c, cl, fresh, "new keys after the restart")
    wait = t_short + SHORT_TTL_MS / 1000 + 1.5 - time.time()
    if wait > 0:
        time.sleep(wait)
    deadline = time.time() + 20
    while True:
        reps, order = pipeline(cl, [{"op": "get", "id": i} for i in short_ids], window=500)
        states = [reps[q]["command"]["state"] for q in order if reps[q].get("ok")]
        if states.count("expired") == len(short_ids) or time.time() > deadline:
            break
        time.sleep(0.5)
    c.eq(states.count("expired"), len(short_ids),
         "short-ttl commands expired after the restart from the snapshot")

    # 2. Writes, then kill -9: no snapshot; the old one put back is stale.
    later = submits("w", 400)
    later_ids = submit_all(c, cl, later, "submits after the restart")
    cl.close()
    d.kill9()
    c.eq([p for p in snaps(d) if os.path.exists(p)], [], "kill -9 leaves no snapshot")
    for s, p in enumerate(snaps(d)):
        src = os.path.join(keep, f"{s}.snap")
        if os.path.exists(src):
            shutil.copy(src, p)
    d.start()
    text = log_text(d)
    c.eq(text.count("loaded (snapshot)"), 0, "the snapshot from before the writes is not used",
         d.log_tail())
    c.eq(text.count("stale"), SHARDS, "each shard says its snapshot is stale", d.log_tail())
    c.eq([p for p in snaps(d) if os.path.exists(p)], [], "the stale snapshots are deleted")
    cl = Client(d.endpoint, timeout=60)
    check_dedupe(c, cl, later, later_ids, "keys written after the snapshot")
    check_dedupe(c, cl, fresh, fresh_ids, "keys of the run after the snapshot")
    check_dedupe(c, cl, reqs, ids, "keys from before the snapshot, after the stale one")
    check_served(c, cl, ids + later_ids, "after the stale snapshot")
    cl.close()
    c.eq(d.term(), 0, "SIGTERM: exit 0")

    # 3. A damaged snapshot is not used.
    p = snaps(d)[0]
    c.ok(os.path.exists(p), "a new snapshot at the second clean stop")
    if os.path.exists(p):
        with open(p, "r+b") as f:
            f.seek(os.path.getsize(p) // 2)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([b[0] ^ 0x40]))
    d.start()
    text = log_text(d)
    c.eq(len(re.findall(r"loaded \(snapshot\) \d+ dedupe", text)), SHARDS - 1, "only the intact snapshot is used",
         d.log_tail())
    c.eq(text.count("loaded (snapshot) the queues"), SHARDS - 1,
         "only the intact snapshot's queues are used", d.log_tail())
    c.ok("damaged (checksum)" in text, "the damaged snapshot is named as damaged", d.log_tail())
    cl = Client(d.endpoint, timeout=60)
    check_dedupe(c, cl, reqs + later, ids + later_ids, "after the damaged snapshot")
    check_served(c, cl, ids + later_ids, "after the damaged snapshot")
    cl.close()
    c.eq(d.term(), 0, "SIGTERM after the checks: exit 0")


if __name__ == "__main__":
    fqlib.run_test("restart_snapshot", main)
