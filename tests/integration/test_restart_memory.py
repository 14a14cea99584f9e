#!/usr/bin/python3
"""Issue 17, memory after a restart: a fleetqd holding tens of thousands of
queued commands is stopped and started again on the same data.  After the
restart it must not hold the store's pages it read to rebuild its tables
(the file-backed part of its RSS stays near an empty daemon's, far below
the data file), nor much anonymous memory per command, and it must still
serve everything: every command `get`s as queued, its key dedupes to the
same id, and the commands submitted with a short ttl expire after the
restart (the deadline heap was rebuilt)."""

import os
import time

from lib import fqlib
from lib.fqlib import Client, Daemon, pipeline, vin

N = 40000
CARS = 400
SHORT = 200       # of them with a short ttl, to expire after the restart
SHORT_TTL_MS = 8000


def status_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0])
    return out


def settled_status(d):
    """RSS once the daemon answers and has settled (the shards announce
    their keys to the ingress after `ready`)."""
    cl = Client(d.endpoint, timeout=30)
    cl.ping(timeout=30)
    cl.close()
    time.sleep(1.0)
    return status_kb(d.proc.pid)


def main(c):
    empty = Daemon(shards=2, extra=["--no-dispatch"])
    empty.start()
    base = settled_status(empty)
    empty.term()
    fqlib.log(f"empty daemon: {base}")

    d = Daemon(shards=2, extra=["--no-dispatch"], accounts=["acct1"])
    d.start()
    cl = Client(d.endpoint, timeout=60)
    reqs = [{"op": "submit", "tenant": f"t{i % 3}", "key": f"k{i}", "account": "acct1",
             "vin": vin(i % CARS), "command": "door_lock", "ttl_ms": 3600000} for i in range(N)]
    reps, order = pipeline(cl, reqs, window=500, timeout=300)
    ids = [reps[q].get("id") for q in order]
    c.eq(sum(1 for q in order if reps[q].get("ok")), N, "every submit acked")
    # Last, behind the others in their cars' queues: commands that expire
    # a few seconds after the restart.
    t_submit = time.time()
    sreqs = [{"op": "submit", "tenant": "t0", "key": f"s{i}", "account": "acct1",
              "vin": vin(i % CARS), "command": "door_lock", "ttl_ms": SHORT_TTL_MS}
             for i in range(SHORT)]
    sreps, sorder = pipeline(cl, sreqs, window=500, timeout=60)
    short_ids = [sreps[q].get("id") for q in sorder]
    c.eq(sum(1 for q in sorder if sreps[q].get("ok")), SHORT, "short-ttl submits acked")
    cl.close()
    c.eq(d.term(), 0, "SIGTERM: exit 0")
    data_kb = sum(os.path.getsize(os.path.join(d.data, f"shard-{s}", "data.mdb"))
                  for s in range(2)) // 1024

    t0 = time.monotonic()
    d.start()
    after = settled_status(d)
    fqlib.log(f"restarted in {time.monotonic() - t0:.2f} s with {N} stored commands "
              f"({data_kb} kB of data files): {after}")
    file_extra = after["RssFile"] - base["RssFile"]
    anon_per = (after["RssAnon"] - base["RssAnon"]) * 1024 / N
    # Without releasing what the rebuild walked, the kernel's fault-around
    # leaves about all of the data files mapped.
    c.ok(file_extra < data_kb // 4,
         f"file-backed RSS after the restart: {file_extra} kB over an empty daemon "
         f"(data files {data_kb} kB; at most a quarter)")
    # The tables cost about 100 bytes a command (idem.c, devq.c; 120 B
    # measured at 40,000, where the tables they replaced took about 350);
    # the bound leaves room for malloc.
    c.ok(anon_per < 250, f"anonymous RSS per stored command after the restart: {anon_per:.0f} B")

    cl = Client(d.endpoint, timeout=60)
    greps, gorder = pipeline(cl, [{"op": "get", "id": i} for i in ids], window=500, timeout=300)
    bad = [(ids[k], greps[q]) for k, q in enumerate(gorder)
           if not greps[q].get("ok") or greps[q]["command"].get("state") != "queued"]
    c.eq(bad[:3], [], "every stored command is served after the restart")
    sample = reqs[::97]
    dreps, dorder = pipeline(cl, sample, window=500, timeout=120)
    want = ids[::97]
    dup_bad = [(m["key"], dreps[q]) for m, q, w in zip(sample, dorder, want)
               if not (dreps[q].get("ok") and dreps[q].get("dup") is True
                       and dreps[q].get("id") == w)]
    c.eq(dup_bad[:3], [], "keys stored before the restart dedupe to the same command")

    # The short-ttl commands expire after the restart (the deadline heap was
    # rebuilt); the others stay queued.
    early = pipeline(cl, [{"op": "get", "id": i} for i in short_ids], window=500)[0]
    fqlib.log("short-ttl commands still queued after the restart: "
              f"{sum(1 for r in early.values() if r['command']['state'] == 'queued')}")
    wait = t_submit + SHORT_TTL_MS / 1000 + 1.5 - time.time()
    if wait > 0:
        time.sleep(wait)
    deadline = time.time() + 20
    while True:
        ereps, eorder = pipeline(cl, [{"op": "get", "id": i} for i in short_ids], window=500)
        states = [ereps[q]["command"]["state"] for q in eorder if ereps[q].get("ok")]
        if states.count("expired") == len(short_ids) or time.time() > deadline:
            break
        time.sleep(0.5)
    c.eq(states.count("expired"), len(short_ids), "short-ttl commands expired after the restart")
    other = cl.get(id_=ids[1])
    c.eq(other.get("command", {}).get("state"), "queued", "a long-ttl command is still queued")
    cl.close()
    c.eq(d.term(), 0, "SIGTERM after the checks: exit 0")


if __name__ == "__main__":
    fqlib.run_test("restart_memory", main)
