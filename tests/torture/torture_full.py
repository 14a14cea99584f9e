#!/usr/bin/env python3
"""Torture: full map and full disk (issue 13, defect 2).

fleetqd dispatches to a real fleetsim whose cars answer slowly, so that
commands pile up while submits (every third a honk_horn: not idempotent)
fill the store until it refuses them with storage_full.  Then, each round:

* full map (--map-size-mb 16, one shard, --retention-s short so that each
  round's commands are pruned and the next round can fill again): the
  daemon stays up; every refused submit gets storage_full with its `req`
  and says why; get, history, a duplicate submit and a cancel work; the
  accepted commands make progress while the store is full; fleetqd is
  killed with SIGKILL at a random moment and restarted on the full store,
  where it starts and serves (storage_full again, with `req`); then the
  cars answer at once and every accepted command ends; new submits are
  stored again once the round's commands ended (and were pruned).
* growth: restarted with --max-store-mb, the map grows (logged) and
  stores more than a 16 MiB round did.
* full disk: the data directory on a small tmpfs under a larger map (no
  short retention: pruned pages are reused without the disk): the
  same promises while the disk is full (and a kill -9 and restart on it),
  and once the tmpfs is made larger, submits are stored again by
  themselves, without a restart.  Mounting needs root or a user namespace
  (`unshare -rm`); where neither is allowed that part is skipped with
  "skipped: cannot mount tmpfs (...)", and only that skip passes.

Checker, over the whole run: every acknowledged command ends terminal; 0
lost (each acknowledged id was seen to end); per car the honks fleetsim
executed are within [succeeded, succeeded + unknown] (0 run twice); every
command's events form one life (a `sent` honk never goes back to the
queue); retained
history is gap-free; fleetqd never crashes (it exits 0 on SIGTERM at the end).

usage: torture_full.py [--rounds N] [--disk-rounds N] [--seed S]
Short form (CI): 2 map rounds and 1 disk round, about a minute; long form
(scripts/soak.sh): --rounds 40 --disk-rounds 10.
"""
import argparse
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from lib import dispatch as dl  # noqa: E402
from lib import fqlib  # noqa: E402
from lib.fqlib import log  # noqa: E402
from lib.storage import Ends, Fill, honks_at_most_once, mount_tmpfs, resize_tmpfs  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=int(os.environ.get("FQ_TORTURE_ROUNDS", "2")),
                help="fill / drain rounds on the 16 MiB map")
ap.add_argument("--disk-rounds", type=int, default=1, help="fill / drain rounds on the tmpfs")
ap.add_argument("--seed", type=int, default=int(os.environ.get("FQ_SEED", "1717")))
ap.add_argument("--settle", type=float, default=240.0, help="seconds a round may take to drain")
args = ap.parse_args()

UNSHARED = "FQ_TORTURE_FULL_UNSHARED"
rng = random.Random(args.seed)
CARS = [dl.vin(1700 + i) for i in range(12)]
FAST = {"latency": {"fixed_ms": 0, "jitter_ms": 0}}
# Long enough that the checker reads every event before it is pruned (it
# reads history at least every few seconds; Ends counts what it missed).
RETENTION_S = 5
# What the cars cannot do within the ttl expires (a terminal state): a round
# drains in about TTL_MS, whatever it stored.
TTL_MS = 12000
HONK_EVERY = 3


class Tally:
    """What the whole run acknowledged and saw end, for the checker and the
    figures line."""

    def __init__(self):
        self.tried = 0      # new submits (the fills' and the probes')
        self.full = 0       # of them answered storage_full
        self.ids = []       # acknowledged
        self.kills = 0
        self.honks = 0      # acknowledged honks
        self.left = []      # acknowledged, never seen to end
        self.twice = 0      # cars that ran more honks than succeeded + unknown
        self.full_after_restart = 0
        self.states = {}    # final states of what was acknowledged

    def add(self, f):
        self.tried += len(f.accepted) + len(f.full) + len(f.other) + len(f.no_req)
        self.full += len(f.full)
        self.ids += f.ids()
        self.honks += sum(1 for m, _ in f.accepted if m["command"] == "honk_horn")


def slow_cars(w):
    """Each car answers after 1-3 s (seeded): one command in flight per
    car, the rest queued, so the store fills with live commands."""
    for v in CARS:
        w.sim.patch_vehicle(v, {"latency": {"fixed_ms": rng.randrange(1000, 3001),
                                            "jitter_ms": 0}})


def fast_cars(w):
    for v in CARS:
        w.sim.patch_vehicle(v, FAST)


def promises_when_full(c, w, f, tag, t, why, ends, reqbase):
    """Checks while the store is full: up, replies with req, reads, a
    duplicate, a cancel, progress of accepted commands, storage_full."""
    f.check(c, why)
    c.ok(len(f.accepted) > 500, f"[{tag}] hundreds stored before full", len(f.accepted))
    c.ok(w.daemon.alive(), f"[{tag}] fleetqd is up when full")
    # One from the middle of the fill: still queued (not ended, so not
    # pruned: the first ones may be by now).
    mid, last = f.accepted[len(f.accepted) // 2], f.accepted[-1]
    g = w.client.call({"op": "get", "id": mid[1]["id"], "req": reqbase + 1})
    c.ok(g.get("ok") and g["command"]["id"] == mid[1]["id"] and g.get("req") == reqbase + 1,
         f"[{tag}] get works when full", g)
    h = w.client.history(0, 0, 100)
    c.ok(h.get("ok") and h["events"], f"[{tag}] history works when full", h.get("error"))
    d = w.client.call(dict(last[0], req=reqbase + 2))
    c.ok(d.get("ok") and d.get("dup") and d.get("id") == last[1]["id"] and
         d.get("req") == reqbase + 2, f"[{tag}] a duplicate submit is answered when full", d)
    # Retention prunes the round's first commands meanwhile, so a few new
    # ones may fit again: until refused.
    _, n = until_full(c, w, f, tag, t, 5000, reqbase + 5000, most=2000)
    c.ok(n.get("error") == "storage_full", f"[{tag}] new submits: storage_full", n)
    # A queued command that is not a honk, from the end of the fill (the
    # cars work from the front).
    victim = next(r for m, r in reversed(f.accepted) if m["command"] != "honk_horn")
    x = w.client.call({"op": "cancel", "id": victim["id"], "req": reqbase + 4})
    c.ok(x.get("ok") and x["command"]["state"] == "cancelled" and x.get("req") == reqbase + 4,
         f"[{tag}] a queued command is cancelled when full", x)
    # Progress: accepted commands keep ending while the store is full.
    ids = f.ids()
    ends.poll()
    before = sum(1 for i in ids if ends.last.get(i, {}).get("state") in dl.TERMINAL)
    t_end = time.monotonic() + 15
    after = before
    while after < before + len(CARS) and time.monotonic() < t_end:
        time.sleep(0.5)
        ends.poll()
        after = sum(1 for i in ids if ends.last.get(i, {}).get("state") in dl.TERMINAL)
    c.ok(after >= before + len(CARS), f"[{tag}] accepted commands progress while full",
         before, after)


def restart_on_full(c, w, f, tag, t, ends, reqbase):
    """kill -9 at a random moment just after the fill, restart on the full
    store: it starts, serves, and is still full (what the commands in
    flight at the kill and retention gave back may take a few probes, then
    storage_full again, every reply with its req)."""
    time.sleep(rng.uniform(0.0, 0.5))
    w.restart_daemon(kill9=True)
    t.kills += 1
    # The fill's last command not ended yet (retention has not pruned it).
    ends.poll()
    last = next(r["id"] for _, r in reversed(f.accepted)
                if ends.last.get(r["id"], {}).get("state") not in dl.TERMINAL)
    g = w.client.get(last)
    c.ok(g.get("ok"), f"[{tag}] get after a kill -9 and restart on the full store", g)
    # Retention prunes the round's first commands, and on a disk the data
    # file's blocks allocated ahead are found again at the start: some new
    # ones may fit.
    stored, n = until_full(c, w, f, f"{tag} after the restart", t, 3000, reqbase + 3000,
                           most=2000)
    t.full_after_restart += n.get("error") == "storage_full"
    c.ok(n.get("error") == "storage_full", f"[{tag}] the restarted store is still full "
         f"({stored} probes stored before storage_full)", n)


def until_full(c, w, f, tag, t, k0, reqbase, most=20):
    """Probes (f.probe(k0 + k)) until one is refused, at most `most`: a
    little room may have come back (commands that ended gave back their
    reserve).  Each reply must be stored or storage_full, with its req.
    (how many were stored, the last reply)."""
    stored, n = 0, {}
    for k in range(most):
        t.tried += 1
        n = w.client.call(f.probe(k0 + k, reqbase + k))
        if not c.ok((n.get("ok") or n.get("error") == "storage_full") and
                    n.get("req") == reqbase + k,
                    f"[{tag}] stored or storage_full, with its req", n):
            break
        if not n.get("ok"):
            t.full += 1
            break
        stored += 1
        t.ids.append(n["id"])
    return stored, n


def disk_returns(c, w, f, tag, t, mnt, reqbase):
    """While the cars are still slow and the store full only because the
    disk is: make the tmpfs larger; submits are stored again by themselves
    (the daemon asks the disk again every second), without a restart."""
    # The data file's blocks allocated ahead (and what the commands that
    # ended since gave back) may take some more: until refused.
    _, n = until_full(c, w, f, tag, t, 1000, reqbase + 1000, most=2000)
    c.ok(n.get("error") == "storage_full" and "disk full" in n.get("message", ""),
         f"[{tag}] still storage_full (disk full)", n)
    st = os.statvfs(mnt)
    size = f"{st.f_blocks * st.f_frsize // (1 << 20) + 32}m"
    ok, err = resize_tmpfs(mnt, size)
    c.ok(ok, f"[{tag}] remount larger", err)
    t0 = time.monotonic()
    stored_again(c, w, f, tag, t, reqbase + 100, 10)
    c.ok(time.monotonic() - t0 < 5, f"[{tag}] room on the disk used within seconds",
         time.monotonic() - t0)


def drain(c, w, f, tag, ends, t):
    """The cars answer at once: every accepted command of the fill ends."""
    fast_cars(w)
    t0 = time.monotonic()
    left = ends.wait(f.ids(), args.settle)
    c.eq(left[:5], [], f"[{tag}] every accepted command ends")
    c.ok(w.daemon.alive(), f"[{tag}] fleetqd is up after the drain")
    log(f"[{tag}] drained in {time.monotonic() - t0:.1f} s: {ends.states(f.ids())}")


def stored_again(c, w, f, tag, t, reqbase, timeout):
    """New submits are stored again (their room came back by itself)."""
    t0 = time.monotonic()
    t_end, k = t0 + timeout, 0
    while time.monotonic() < t_end:
        k += 1
        t.tried += 1
        n = w.client.call(f.probe(200 + k, reqbase + 60 + k))
        if n.get("ok"):
            log(f"[{tag}] stored again {time.monotonic() - t0:.1f} s after room came back")
            c.eq(n.get("req"), reqbase + 60 + k, f"[{tag}] stored again, with its req")
            t.ids.append(n["id"])
            return n
        if not c.ok(n.get("error") == "storage_full", f"[{tag}] stored or storage_full", n):
            return None
        t.full += 1
        time.sleep(0.25)
    c.ok(False, f"[{tag}] stored again within {timeout} s")
    return None


def finish_part(c, w, ends, ids, tag, t):
    """The part's verdict on what it acknowledged: all ended, honks within
    what was reported, nothing fatal logged, history gap-free."""
    all_end(c, w, ends, ids, tag, t)
    for k, n in ends.states(ids).items():
        t.states[k] = t.states.get(k, 0) + n
    t.twice += honks_at_most_once(c, w, ends, ids, CARS)
    c.ok("fatal" not in w.daemon.log_tail(400), f"[{tag}] nothing fatal in the log")
    check_history(c, w, tag)


def close_world(c, w, tag):
    rc_d, rc_s = w.close()
    c.eq(rc_d, 0, f"[{tag}] fleetqd exits 0 on SIGTERM")
    c.eq(rc_s, 0, f"[{tag}] fleetsim exits 0")


def all_end(c, w, ends, ids, tag, t):
    """Every command the part acknowledged was seen to end, and the checker
    saw every event before retention pruned it (else "lost" would mean
    nothing)."""
    left = ends.wait(ids, args.settle)
    t.left += left
    c.eq(left[:5], [], f"[{tag}] every acknowledged command ended ({len(ids)})")
    c.eq(ends.missed, 0, f"[{tag}] the checker read every event before it was pruned")


def check_history(c, w, tag):
    """Retained history is one gap-free run of seqs (from where it begins
    now: an `after` below `first` starts the page there), and each
    tenant's tseqs too."""
    # Page by page, as history_all does, but a page that starts past
    # `after + 1` exactly at the reply's `first` (the oldest event retained
    # now) means retention pruned the rest between two pages: the retained
    # history begins there now, and the run is collected again from it.
    # Anything else past `after + 1` is a gap.
    evs, after = [], 0
    while True:
        r = w.client.history(0, after)
        if not r.get("ok"):
            raise RuntimeError(f"history failed: {r!r}")
        page = r["events"]
        if not page:
            break
        if evs and page[0]["seq"] != after + 1 and page[0]["seq"] == r.get("first"):
            evs = []
        evs += page
        if page[-1]["seq"] <= after:
            break
        after = page[-1]["seq"]
    seqs = [e["seq"] for e in evs]
    gaps = [(a, b) for a, b in zip(seqs, seqs[1:]) if b != a + 1]
    c.eq(gaps[:3], [], f"[{tag}] history gap-free from {seqs[:1]} ({len(seqs)} events)")
    tseqs = [e["tseq"] for e in evs if e["tenant"] == dl.TENANT]
    gaps = [(a, b) for a, b in zip(tseqs, tseqs[1:]) if b != a + 1]
    c.eq(gaps[:3], [], f"[{tag}] tenant history gap-free")


def idle(ends, secs):
    """Wait, reading history meanwhile (so retention prunes nothing unread)."""
    t_end = time.monotonic() + secs
    while time.monotonic() < t_end:
        ends.poll()
        time.sleep(0.5)


def check_lives(c, ends, ids, tag):
    """Every command's events, as the checker read them (all of them: it
    missed none), form one life: the first `queued` with no prev, each
    prev the state before (an idempotent command may go back from `sent`
    to `queued` after a crash), one terminal state and it is last; a honk
    that was `sent` goes on only to an end or to `retrying` (the answer
    said it did not run: 429, 503, a busy car), never back to `queued` or
    `dispatching` (defect 1).  Failures are counted, the first few shown."""
    bad = []
    for i in ids:
        life = ends.lives.get(i) or []
        sts = [x[0] for x in life]
        prevs = [x[1] for x in life]
        honk = ends.last.get(i, {}).get("command") == "honk_horn"
        if (not life or prevs != [None] + sts[:-1] or
                [x for x in sts if x in dl.TERMINAL] != [sts[-1]] or
                (honk and any(a == "sent" and b not in dl.TERMINAL | {"retrying"}
                              for a, b in zip(sts, sts[1:])))):
            bad.append((i, sts, prevs))
    c.eq(len(bad), 0, f"[{tag}] every command's events form one life ({len(ids)} commands)",
         *bad[:3])


def round_(c, w, tag, ends, t, after_full, reqbase, kill=True, mnt=None):
    """One round: fill to storage_full, (kill -9 and restart,) the
    promises while full, (the disk's room back,) drain."""
    slow_cars(w)
    f = Fill(tag, CARS, honk_every=HONK_EVERY, extra={"ttl_ms": TTL_MS}).run(
        w, after_full=after_full)
    t.add(f)
    if kill:
        restart_on_full(c, w, f, tag, t, ends, reqbase)
    promises_when_full(c, w, f, tag, t, "high-water mark" if mnt is None else "disk full",
                       ends, reqbase)
    if mnt is not None:
        disk_returns(c, w, f, tag, t, mnt, reqbase)
    drain(c, w, f, tag, ends, t)
    check_lives(c, ends, f.ids(), tag)
    return f


def part_map(c, t):
    w = dl.World("torture_full map", vehicles=[dl.default_vehicle(v) for v in CARS], shards=1,
                 sim_extra={"max_executions": 4000000},
                 daemon_opts={"--map-size-mb": 16, "--http-timeout-ms": 10000,
                              "--retention-s": RETENTION_S, "--dedupe-window-s": RETENTION_S})
    try:
        ends = Ends(w, lives=True)
        sizes = []
        for k in range(args.rounds):
            f = round_(c, w, f"map{k}", ends, t, 200, 100000 * (k + 1))
            sizes.append(len(f.accepted))
            # The round's commands ended: room comes back (their reserve,
            # then what pruning gives back).
            stored_again(c, w, f, f"map{k}", t, 100000 * (k + 1) + 50, RETENTION_S + 30)
            # Let the round be pruned before the next fills the map again.
            idle(ends, RETENTION_S + 1.0)
        check_history(c, w, "map")

        # Growth: the map may grow to --max-store-mb.
        w.daemon.extra += ["--max-store-mb", "24"]
        w.restart_daemon(kill9=False)
        f = round_(c, w, "grown", ends, t, 100, 900000, kill=False)
        if sizes:
            c.ok(len(f.accepted) > max(sizes) * 1.2, "the grown map stores more than a "
                 "16 MiB round", len(f.accepted), sizes)
        logs = w.daemon.log_tail(400)
        c.ok("map grown from 16.0 MiB to 24.0 MiB" in logs, "the map grew to --max-store-mb",
             logs[-1500:])
        finish_part(c, w, ends, t.ids, "map", t)
    except Exception:
        log("---- fleetqd log tail ----\n" + w.daemon.log_tail(40))
        raise
    finally:
        close_world(c, w, "map")


def can_mount(w):
    mnt = os.path.join(w.tmp, "disk")
    ok, why = mount_tmpfs(mnt, "16m")
    return mnt if ok else None, why


def part_disk(c, t):
    # No short retention here: pruning frees pages inside the data file,
    # which new commands reuse without a block more of the disk, and would
    # let them in while the disk is still full.  Each round fills what the
    # tmpfs is given more.
    w = dl.World("torture_full disk", vehicles=[dl.default_vehicle(v) for v in CARS], shards=1,
                 sim_extra={"max_executions": 4000000},
                 daemon_opts={"--map-size-mb": max(64, 16 * (args.disk_rounds + 2)),
                              "--http-timeout-ms": 10000},
                 start=False)
    mnt, why = can_mount(w)
    if mnt is None:
        w.close()
        return why
    try:
        w.daemon.data = os.path.join(mnt, "data")
        w.start()
        ends = Ends(w, lives=True)
        ids0 = len(t.ids)
        for k in range(args.disk_rounds):
            tag = f"disk{k}"
            round_(c, w, tag, ends, t, 200, 2000000 + 100000 * k, mnt=mnt)
            c.ok(w.daemon.alive(), f"[{tag}] fleetqd is up")
            # Small again for the next round: what the files hold now and
            # 8 MiB to fill.
            st = os.statvfs(mnt)
            used_mb = (st.f_blocks - st.f_bfree) * st.f_frsize // (1 << 20)
            size = f"{max(16, used_mb + 8)}m"
            ok, err = resize_tmpfs(mnt, size)
            c.ok(ok, f"[{tag}] tmpfs back to {size}", err)
        finish_part(c, w, ends, t.ids[ids0:], "disk", t)
    except Exception:
        log("---- fleetqd log tail ----\n" + w.daemon.log_tail(40))
        raise
    finally:
        close_world(c, w, "disk")
    return None


def reexec_unshared():
    """Not root: run again in a user and mount namespace (`unshare -rm`),
    where a tmpfs can be mounted, when that is allowed."""
    if os.geteuid() == 0 or os.environ.get(UNSHARED):
        return
    try:
        ok = subprocess.run(["unshare", "-rm", "true"], capture_output=True,
                            timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if ok:
        env = dict(os.environ, **{UNSHARED: "1"})
        os.execvpe("unshare", ["unshare", "-rm", sys.executable] + sys.argv, env)


def main(c):
    t = Tally()
    t0 = time.monotonic()
    part_map(c, t)
    skipped = part_disk(c, t) if args.disk_rounds else "--disk-rounds 0"
    if skipped:
        log(f"torture_full: disk part skipped: cannot mount tmpfs ({skipped})")
    log(f"torture_full: tried {t.tried}, acked {len(t.ids)} ({t.honks} honks), storage_full "
        f"{t.full}, lost {len(t.left)}, run twice {t.twice}, crashed 0, kill -9 on a full store "
        f"{t.kills} ({t.full_after_restart} still full after it), final states {t.states}, "
        f"{args.rounds} map + {0 if skipped else args.disk_rounds} disk rounds in "
        f"{time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    reexec_unshared()
    fqlib.run_test("torture_full", main)
