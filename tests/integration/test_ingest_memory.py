#!/usr/bin/python3
"""Memory a client can pin (issue 13, defect 6).  A client that never
reads (ZMQ_RCVHWM 1 and a 4 KB receive buffer: TCP pushes back at once)
costs the daemon a bounded, small amount:

* `req` is capped at 256 bytes: 2,000 pings with a 200 KB `req` are each
  refused (bad_request naming req, the req not echoed) and the daemon's RSS
  barely moves (before: +450 MB, kept after the client left);
* replies a client has not read are bounded in bytes (--client-reply-kb):
  10,000 `get`s of a command with 15 KB of params (150 MB of replies) leave
  the daemon at most the limit plus its batch buffers (before: +150 MB),
  the excess replies are dropped and logged, and a reading client is served
  all along;
* a shard's batch output is capped (2 MiB; the requests past it wait for
  the next batch): 8,000 pipelined `get`s of a command with 16 KB of params
  are all answered (before, one batch went past its buffers' 64 MiB cap and
  the daemon exited 70)."""

import os
import time

import zmq

from lib import fqlib
from lib.fqlib import Client, Daemon, pack, unpack

CTX = zmq.Context.instance()


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def settle(pid, quiet=1.5, limit=60):
    end = time.monotonic() + limit
    last, since = rss_mb(pid), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.25)
        now = rss_mb(pid)
        if now > last + 0.5:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return rss_mb(pid)


def non_reader(ep):
    s = CTX.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVHWM, 1)
    s.setsockopt(zmq.RCVBUF, 4096)
    s.setsockopt(zmq.SNDHWM, 0)
    s.connect(ep)
    return s


def main(c):
    with Daemon(shards=2, extra=["--no-dispatch", "--client-reply-kb", "8192"],
                accounts=["acct1"]) as d:
        pid = d.proc.pid
        cl = Client(d.endpoint, timeout=10)
        # The cap itself, for a client that reads.
        big = b"x" * (200 * 1024)
        r = cl.call({"op": "ping", "req": big})
        c.eq((r.get("ok"), r.get("error"), "req" in r), (False, "bad_request", False),
             "a 200 KB req: bad_request, not echoed", {k: v for k, v in r.items() if k != "req"})
        c.ok('"req"' in r.get("message", "") and "256" in r.get("message", ""),
             "the message names req and the limit", r.get("message"))
        r = cl.call({"op": "ping", "req": b"y" * 250})
        c.eq((r.get("ok"), r.get("req")), (True, b"y" * 250), "a 250-byte req is echoed")

        # 2,000 pings with a 200 KB req from a client that never reads.
        s = non_reader(d.endpoint)
        time.sleep(0.3)
        before = settle(pid, 1.0)
        for _ in range(2000):
            s.send(pack({"op": "ping", "req": big}))
        during = settle(pid)
        fqlib.log(f"pings: RSS {before:.1f} MB -> {during:.1f} MB")
        c.ok(during - before < 20, f"2,000 pings with a 200 KB req: RSS +{during - before:.1f} MB "
             "(want < 20; 400 MB before the cap)")
        s.close(0)
        c.eq(cl.ping().get("ok"), True, "still serving")

        # A command with 15 KB of params, fetched 10,000 times by a client
        # that never reads.
        tou = {"tariff_content_v2": {"version": 1, "name": "t" * 15000}}
        r = cl.call({"op": "submit", "tenant": "mem", "key": "big", "account": "acct1",
                     "site": 77, "command": "time_of_use_settings",
                     "params": {"tou_settings": tou}})
        c.ok(r.get("ok"), "the large command is accepted", r)
        cid = r.get("id")
        s = non_reader(d.endpoint)
        time.sleep(0.3)
        before = settle(pid, 1.0)
        body = pack({"op": "get", "id": cid})
        for _ in range(10000):
            s.send(body)
        # A client that reads is served meanwhile, every reply.
        got = 0
        for i in range(200):
            g = cl.call({"op": "get", "id": cid, "req": i})
            got += g.get("ok") is True and g.get("req") == i
        c.eq(got, 200, "a reading client gets every reply meanwhile")
        during = settle(pid)
        fqlib.log(f"gets: RSS {before:.1f} MB -> {during:.1f} MB")
        c.ok(during - before < 60, f"10,000 unread 15 KB replies: RSS +{during - before:.1f} MB "
             "(want < 60: the 8 MiB limit and the shards' batch buffers; 150 MB without it)")
        with open(d.logpath, "rb") as f:
            text = f.read()
        c.ok(b"has not read, over --client-reply-kb 8192" in text,
             "the dropped replies are logged with the limit")
        s.close(0)
        c.eq(cl.ping().get("ok"), True, "still serving after the client left")

        # 8,000 gets of a 16 KB command, pipelined by a client that reads.
        tou = {"tariff_content_v2": {"version": 1, "name": "t" * 16200}}
        r = cl.call({"op": "submit", "tenant": "mem", "key": "bigger", "account": "acct1",
                     "site": 78, "command": "time_of_use_settings",
                     "params": {"tou_settings": tou}})
        c.ok(r.get("ok"), "the 16 KB command is accepted", r)
        # At most 400 in flight (about 6.2 MB of replies, under the 8 MiB
        # per-client limit): a client whose outstanding replies fit in the
        # limit never loses one, however slowly it reads.  With 8,000 in
        # flight (125 MB asked for at once) a reader slower than the daemon
        # loses replies by design (docs/operations.md), which made this
        # check depend on the machine's load.  Batches still exceed the
        # shard's 2 MiB output cap, the case that used to exit 70.
        reps, _ = fqlib.pipeline(cl, [{"op": "get", "id": r.get("id")}] * 8000, window=400,
                                 timeout=120)
        c.eq(sum(1 for x in reps.values() if x.get("ok")), 8000,
             "8,000 pipelined gets of a 16 KB command: all answered")
        c.ok(d.alive(), "and the daemon is alive")
        cl.close()


fqlib.run_test("ingest_memory", main)
