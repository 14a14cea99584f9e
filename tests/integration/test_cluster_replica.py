#!/usr/bin/python3
"""Issue 18, the building blocks of cluster steps 2 and 3 (src/cluster/replica.h,
docs/cluster.md) against a real 3-node NATS JetStream cluster on loopback
(lib/nats.py), driven through tests/cluster/fq_replica_check.c:

* an owner store (capture on) takes the shard over (its marker after the
  genesis) and writes batches of realistic commands through the store API,
  each with fq_replica_commit (prepare, append fenced by the expected last
  sequence, then the LMDB commit); a follower catches up along the way;
* between two batches the Raft leader of the shard's stream is killed (-9):
  the next append waits for the new leader (retried with the same msg id,
  inside the call) and the batches go on with 2 servers of 3;
* both followers catch up: the three LMDB environments are equal row by
  row (every named database, meta store_id aside), applied = the log's end;
* fencing: a second node takes over (its marker); the first owner's next
  fq_replica_commit is FQ_CL_EFENCED and leaves its store exactly as it was
  (same rows, same applied, same next event seq); the new owner commits,
  the old one steps down and catches up, and all three are equal again;
* no quorum (2 of 3 servers killed): a commit gives up after its bound with
  FQ_CL_EUNAVAIL and leaves the store as it was; once the servers are back
  the owner catches up (the given-up batch is applied if it landed after
  all), commits again, and a follower equals it row by row.

Prints the commit times and the measured cost of the replicated commit
(append at R3 + LMDB commit) next to a local commit, for batches of 1 and
of 1000 submits."""

import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.request

from lib import fqlib
from lib.fqlib import log, run_test
from lib.nats import NatsCluster, available

CHECK = os.environ.get("FQ_REPLICA_CHECK") or os.path.join(
    os.path.dirname(fqlib.BIN), "tests", "fq_replica_check")

SHARD = 0
BATCHES = 10
PER_BATCH = 60
PAUSE_AFTER = 4


def fields(line):
    """'word k=v k=v rest' -> {'_': word, k: v}"""
    parts = line.split()
    d = {"_": parts[0] if parts else ""}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            d.setdefault(k, v)
    return d


def stream_leader(cl, name):
    """The index of the server that leads stream `name` (from /jsz), or None."""
    for i in range(cl.n):
        if cl.procs[i] is None:
            continue
        try:
            url = f"http://127.0.0.1:{cl.mon_ports[i]}/jsz?accounts=true&streams=true"
            with urllib.request.urlopen(url, timeout=2) as r:
                j = json.load(r)
        except OSError:
            continue
        for acc in j.get("account_details") or []:
            for s in acc.get("stream_detail") or []:
                leader = (s.get("cluster") or {}).get("leader")
                if s.get("name") == name and leader:
                    return int(leader[len(cl.name):])
    return None


def scratch_dir():
    d = tempfile.mkdtemp(prefix="fq-replica-")
    fqlib._cleanups.append(lambda: subprocess.run(["rm", "-rf", d]))
    return d


def scenario_run(c, cl):
    p = subprocess.Popen([CHECK, cl.urls(), scratch_dir(), "run", str(SHARD), str(BATCHES),
                          str(PER_BATCH), str(PAUSE_AFTER)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    fqlib._cleanups.append(lambda: p.poll() is None and p.kill())
    # Bounded: the whole run takes seconds; a hang fails here, not in ctest.
    timer = threading.Timer(90, p.kill)
    timer.start()
    lines, victim = [], None
    for line in p.stdout:
        line = line.rstrip("\n")
        if " info " in line or " warn " in line:
            continue
        lines.append(line)
        if line.startswith("pause "):
            victim = stream_leader(cl, f"FQ_SHARD_{SHARD}")
            if victim is None:
                victim = 1
            log(f"[replica] killing nats-server {victim} (FQ_SHARD_{SHARD}'s leader) "
                f"between batches {PAUSE_AFTER} and {PAUSE_AFTER + 1}")
            cl.kill9(victim)
            p.stdin.write("go\n")
            p.stdin.flush()
    rc = p.wait()
    timer.cancel()
    text = "\n".join(lines[-40:])
    for ln in lines:
        if ln.startswith(("batch ", "caught_up ", "takeover ", "fenced ", "owner_done ")):
            log(f"  {ln}")
    ev = [fields(x) for x in lines]

    def first(word):
        return next((e for e in ev if e["_"] == word), None)

    c.eq(rc, 0, "fq_replica_check run exits 0 (no failed check)", text)
    c.eq([x for x in lines if x.startswith("FAIL")], [], "no check failed inside", text)
    c.ok(victim is not None, "a nats-server was killed between batches", text)
    batches = [e for e in ev if e["_"] == "batch"]
    c.eq([int(e["i"]) for e in batches], list(range(1, BATCHES + 1)),
         "every batch committed, including those after the kill (2 of 3 servers)", text)
    # genesis 1, a's marker 2, the batches 3.., one sequence each
    c.eq([int(e["seq"]) for e in batches], list(range(3, BATCHES + 3)),
         "each batch is the log's next entry", text)
    after = [e for e in batches if int(e["i"]) > PAUSE_AFTER]
    if after:
        log(f"[replica] first commit after the leader's kill: {after[0]['commit_ms']} ms "
            f"({after[0]['retries']} retries with the same msg id)")
    ident = [e for e in ev if e["_"] == "identical"]
    c.eq([e.get("stage") for e in ident], ["batches", "takeover"],
         "the three stores are equal row by row after the batches and after the takeover",
         text)
    if ident:
        c.eq(int(ident[0]["applied"]), BATCHES + 2, "applied = the log's end on all three")
        c.ok(int(ident[0]["rows"]) > BATCHES * PER_BATCH * 3, "with thousands of rows",
             ident[0])
    f = first("fenced")
    c.ok(f is not None and f.get("rc") == "-20001",
         "the first owner's commit after the takeover is FQ_CL_EFENCED", text)
    c.ok(first("unchanged") is not None, "and its store is exactly as before the attempt",
         text)
    t = [e for e in ev if e["_"] == "takeover"]
    c.eq([(e["node"], e["marker"]) for e in t],
         [("a", "2"), ("b", str(BATCHES + 3))], "the two takeover markers", text)
    return batches


GIVE_UP_MS = 3000


def scenario_unavail(c, cl):
    p = subprocess.Popen([CHECK, cl.urls(), scratch_dir(), "unavail", str(SHARD + 3), "40",
                          str(GIVE_UP_MS)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    fqlib._cleanups.append(lambda: p.poll() is None and p.kill())
    timer = threading.Timer(120, p.kill)
    timer.start()
    lines, killed = [], []
    for line in p.stdout:
        line = line.rstrip("\n")
        if " info " in line or " warn " in line:
            continue
        lines.append(line)
        if line == "pause at=quorum_lost":
            leader = stream_leader(cl, f"FQ_SHARD_{SHARD + 3}")
            killed = [i for i in range(cl.n) if i != leader][:2]
            log(f"[replica] killing nats-servers {killed}: no quorum")
            for i in killed:
                cl.kill9(i)
            p.stdin.write("go\n")
            p.stdin.flush()
        elif line == "pause at=quorum_back":
            for i in killed:
                cl.start_one(i)
            cl.wait_ready(killed, 60)
            log(f"[replica] nats-servers {killed} back")
            p.stdin.write("go\n")
            p.stdin.flush()
    rc = p.wait()
    timer.cancel()
    text = "\n".join(lines[-30:])
    ev = [fields(x) for x in lines]
    for ln in lines:
        if ln.startswith(("gave_up ", "given_up_batch ", "caught_up ")):
            log(f"  {ln}")
    c.eq(rc, 0, "fq_replica_check unavail exits 0", text)
    c.eq([x for x in lines if x.startswith("FAIL")], [], "no check failed inside (unavail)", text)
    g = next((e for e in ev if e["_"] == "gave_up"), None)
    c.ok(g is not None and g.get("rc") == "-20002",
         "without a quorum the commit gives up with FQ_CL_EUNAVAIL", text)
    if g:
        took = int(g["took_ms"])
        c.ok(GIVE_UP_MS <= took < GIVE_UP_MS + 5000, "after its bound, not much later",
             f"took {took} ms, bound {GIVE_UP_MS} ms")
    c.ok(any(e["_"] == "unchanged" for e in ev), "and leaves the store as it was", text)
    c.ok(any(e["_"] == "identical" and e.get("stage") == "unavail" for e in ev),
         "after the quorum is back, owner and follower are equal row by row", text)


def scenario_bench(c, cl, per, batches):
    r = subprocess.run([CHECK, cl.urls(), scratch_dir(), "bench", str(SHARD + 1 + (per > 1)),
                        str(batches), str(per)], capture_output=True, text=True, timeout=90)
    res = [fields(x) for x in r.stdout.splitlines() if x.startswith("bench ")]
    c.ok(r.returncode == 0 and res, f"bench of batches of {per}", r.stdout[-600:])
    if res:
        b = res[-1]
        log(f"[replica] batch of {per}: append + commit median {b['replicated_median_us']} us "
            f"(p90 {b['replicated_p90_us']}), local commit alone median "
            f"{b['local_median_us']} us (p90 {b['local_p90_us']}); "
            f"{b['bytes_per_batch']} bytes per write set, {batches} batches")
        return b
    return None


def main(c):
    if not c.ok(available(), "nats-server is installed (scripts/deps.sh)"):
        return
    if not c.ok(os.access(CHECK, os.X_OK), f"fq_replica_check built: {CHECK}"):
        return
    t0 = time.time()
    cl = NatsCluster(3).start()
    scenario_run(c, cl)
    # The killed server back: 3 of 3 again.
    for i in range(cl.n):
        if cl.procs[i] is None:
            cl.restart(i)
    scenario_unavail(c, cl)
    # For the measurements, 3 of 3.
    for i in range(cl.n):
        if cl.procs[i] is None:
            cl.restart(i)
    scenario_bench(c, cl, 1, 60)
    scenario_bench(c, cl, 1000, 15)
    log(f"[replica] {time.time() - t0:.1f} s")


if __name__ == "__main__":
    run_test("test_cluster_replica", main)
