#!/usr/bin/env python3
"""`fleetq watch --tenant T --fill`: a history page fleetqd refuses with
`busy` (what a loaded daemon answers) is asked again, so the gap it was
meant to fill is filled: every event exactly once.  Before, the page was
given up and the watch moved the tenant's tseq past the gap, silently
losing those events (the flaky "watch --fill: every event exactly once" of
test_cli under load).

A ROUTER and an XPUB made here play fleetqd: the watch's ping and history
requests are answered from a list of 6 events of tenant gx on shard 0;
the stream publishes tseq 1, then 6 (2..5 "dropped"); the first tenant
history request gets `busy` twice, as does the first by shard seq.  A
second watch whose pages always get `busy` says which events it could
not fetch."""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import msgpack  # noqa: E402
import zmq  # noqa: E402

import fqlib  # noqa: E402
from fqlib import run_test  # noqa: E402

VIN = fqlib.vin(7)
EVENTS = [{"id": f"fq-{i}", "tenant": "gx", "vin": VIN, "command": "door_lock",
           "state": "queued", "prev": None, "at": 1796342400000 + i, "shard": 0,
           "seq": 10 * i, "tseq": i} for i in range(1, 7)]


class FakeDaemon:
    def __init__(self, busy_tenant_pages):
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.bind("tcp://127.0.0.1:*")
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.linger = 0
        self.pub.bind("tcp://127.0.0.1:*")
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.publish = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.busy_tenant = busy_tenant_pages  # how many tenant pages get busy first
        self.busy_seq = 2
        self.history = []  # (tenant, after, limit, answer)
        self.subscribed = threading.Event()
        self.stop = threading.Event()
        self.errors = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _answer(self, req):
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "version": "fake", "shards": 1}
        if op != "history":
            return {"ok": False, "error": "bad_request", "message": f"fake: no {op}"}
        tenant, after, limit = req.get("tenant"), req.get("after", 0), req.get("limit", 100)
        if tenant is not None and self.busy_tenant > 0:
            self.busy_tenant -= 1
            self.history.append((tenant, after, limit, "busy"))
            return {"ok": False, "error": "busy", "message": "fleetqd is saturated; retry later"}
        if tenant is None and after > 0 and self.busy_seq > 0:
            self.busy_seq -= 1
            self.history.append((tenant, after, limit, "busy"))
            return {"ok": False, "error": "busy", "message": "too many lookups in flight; retry"}
        key = "tseq" if tenant is not None else "seq"
        evs = [e for e in EVENTS if e[key] > after][:limit]
        self.history.append((tenant, after, limit, len(evs)))
        return {"ok": True, "events": evs, "next": evs[-1][key] if evs else after, "first": 1}

    def _run(self):
        try:
            poller = zmq.Poller()
            poller.register(self.router, zmq.POLLIN)
            poller.register(self.pub, zmq.POLLIN)
            while not self.stop.is_set():
                for s, _ in poller.poll(10):
                    frames = s.recv_multipart()
                    if s is self.pub:
                        if frames[0][:1] == b"\x01":
                            self.subscribed.set()
                        continue
                    req = msgpack.unpackb(frames[-1], raw=False)
                    rep = self._answer(req)
                    if "req" in req:
                        rep["req"] = req["req"]
                    self.router.send_multipart(frames[:-1] + [msgpack.packb(rep)])
        except Exception as e:  # reported by the test, not lost in a thread
            self.errors.append(repr(e))

    def publish_event(self, ev):
        self.pub.send_multipart([f"gx/{VIN}".encode(), msgpack.packb(ev)])

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.ctx.destroy(0)


def watch(fake, count, seconds):
    return subprocess.Popen([os.path.join(fqlib.BIN, "fleetq"), "watch", "--tenant", "gx",
                             "--fill", "--json", "--count", str(count), "--timeout", str(seconds),
                             "--endpoint", fake.endpoint, "--publish", fake.publish],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_one(c, busy_tenant, count, seconds):
    fake = FakeDaemon(busy_tenant)
    try:
        w = watch(fake, count, seconds)
        c.ok(fake.subscribed.wait(10), "the watch subscribed")
        time.sleep(0.2)
        fake.publish_event(EVENTS[0])
        time.sleep(0.3)
        fake.publish_event(EVENTS[5])
        out, err = w.communicate(timeout=60)
        c.eq(fake.errors, [], "the fake daemon ran without errors")
        got = [fqlib.json.loads(x)["tseq"] for x in out.splitlines() if x.startswith("{")]
        return w.returncode, got, err, fake.history
    finally:
        fake.close()


def test(c):
    rc, got, err, hist = run_one(c, 2, 6, 20)
    c.eq((rc, got), (0, [1, 2, 3, 4, 5, 6]),
         "busy pages are asked again: every event exactly once, in order", err, hist)
    tenant_pages = [h for h in hist if h[0] == "gx"]
    c.eq([h[3] for h in tenant_pages], ["busy", "busy", 4], "two busy answers, then the page",
         hist)
    c.ok("recovered 4 missed event(s)" in err, "the watch says what it recovered", err)
    c.ok("could not be fetched" not in err, "nothing reported missing", err)

    # fleetqd stays busy: the watch gives the page up after its tries and
    # says which events are missing (it cannot wait forever).
    rc, got, err, hist = run_one(c, 1000, 6, 25)
    c.eq(got, [1, 6], "only the live events", err)
    c.eq(len([h for h in hist if h[0] == "gx"]), 8, "8 tries of the tenant page", hist)
    c.ok("busy" in err and "tseq 2..5 could not be fetched" in err,
         "the watch names the events it could not fetch", err)


run_test("test_watch_fill_retry", test)
