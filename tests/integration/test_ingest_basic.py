#!/usr/bin/python3
"""Issue 2, ingest basics: submit reply shape, get (fields, transitions),
lookup by tenant + key, not_found, ping, energy sites, and REQ / DEALER
framing (envelope frames echoed unchanged before the reply body)."""

import time

import zmq

from lib import fqlib
from lib.fqlib import Client, Daemon, pack, unpack, vin


def main(c):
    # Nothing is sent (--no-dispatch): commands stay queued; fleetqd has
    # the accounts the submits name (it refuses others: unknown_account).
    with Daemon(shards=4, extra=["--no-dispatch"], accounts=["acct1", "a"]) as d:
        cl = Client(d.endpoint)

        # ping: version string and the shard count we started with
        p = cl.ping()
        c.eq(p.get("ok"), True, "ping ok")
        c.ok(isinstance(p.get("version"), str) and p["version"], "ping version is a string", p)
        c.eq(p.get("shards"), 4, "ping shards")
        p = cl.call({"op": "ping", "v": 1, "req": "p1"})
        c.eq((p.get("ok"), p.get("req")), (True, "p1"), "ping with v: 1 and req echoed")

        # submit: exact reply shape
        t0 = int(time.time() * 1000)
        r = cl.submit("acme", "basic-1", command="set_charge_limit", vin_=vin(1),
                      params={"percent": 80}, req=17, ttl_ms=600000)
        c.eq(set(r), {"ok", "id", "state", "dup", "req"}, "submit reply keys")
        c.eq((r.get("ok"), r.get("state"), r.get("dup"), r.get("req")),
             (True, "queued", False, 17), "submit reply values")
        c.ok(isinstance(r.get("id"), str) and 0 < len(r["id"]) <= 64, "id is a short string", r)
        cid = r["id"]

        # req of any scalar type comes back as sent
        for req in ["text", 0, -5, 3.5, True, None, 2**63 - 1]:
            r2 = cl.submit("acme", f"basic-req-{req!r}", vin_=vin(2), req=req)
            c.eq((r2.get("ok"), r2.get("req", "<absent>")), (True, req), f"req {req!r} echoed")

        # get by id: fields, state, transitions
        g = cl.get(cid)
        c.eq(g.get("ok"), True, "get ok")
        cmd = g.get("command", {})
        c.eq(cmd.get("id"), cid, "get id")
        c.eq(cmd.get("tenant"), "acme", "get tenant")
        c.eq(cmd.get("key"), "basic-1", "get key")
        c.eq(cmd.get("account"), "acct1", "get account")
        c.eq(cmd.get("vin"), vin(1), "get vin")
        c.eq(cmd.get("command"), "set_charge_limit", "get command")
        c.eq(cmd.get("params"), {"percent": 80}, "get params")
        c.eq(cmd.get("state"), "queued", "get state")
        c.ok("reason" in cmd and "error" in cmd, "get has reason and error", cmd)
        c.ok(any(k in cmd for k in ("attempts", "attempt")), "get has attempts", cmd)
        tr = cmd.get("transitions")
        c.ok(isinstance(tr, list) and len(tr) == 1, "one transition so far", tr)
        if isinstance(tr, list) and tr:
            c.eq(tr[-1].get("state"), "queued", "last transition is queued")
            at = tr[-1].get("at", 0)
            c.ok(t0 - 5000 <= at <= int(time.time() * 1000) + 5000,
                 "transition time is now (unix ms)", at, t0)
        created = cmd.get("created", cmd.get("created_at"))
        c.ok(isinstance(created, int) and abs(created - t0) < 10000, "created is now", cmd)

        # get by tenant + key finds the same command
        g2 = cl.get(tenant="acme", key="basic-1")
        c.eq(g2.get("command", {}).get("id"), cid, "get by tenant+key")
        # unknown id / key: not_found
        for q in [{"id": "0000000000000000"}, {"tenant": "acme", "key": "nope"},
                  {"tenant": "other", "key": "basic-1"}]:
            m = {"op": "get", "req": 9}
            m.update(q)
            e = cl.call(m)
            c.eq((e.get("ok"), e.get("error"), e.get("req")), (False, "not_found", 9),
                 f"get {q} is not_found")
            c.ok(isinstance(e.get("message"), str) and e["message"], "not_found has a message", e)

        # energy site
        s = cl.submit("acme", "site-1", command="backup", site=4242,
                      params={"backup_reserve_percent": 30})
        c.eq((s.get("ok"), s.get("state")), (True, "queued"), "site submit")
        gs = cl.get(s.get("id")).get("command", {})
        c.eq((gs.get("site"), gs.get("vin", None)), (4242, None), "site command has site, no vin")

        # REQ socket: pyzmq's REQ adds and strips the empty delimiter, so a
        # reply arrives only if the daemon echoed the delimiter frame.
        req = Client(d.endpoint, kind=zmq.REQ)
        rr = req.call({"op": "ping", "req": "via-req"}, timeout=5)
        c.eq((rr.get("ok"), rr.get("req")), (True, "via-req"), "REQ client ping")
        rs = req.call({"op": "submit", "tenant": "acme", "key": "req-sock", "account": "a",
                       "vin": vin(3), "command": "door_lock"}, timeout=5)
        c.eq((rs.get("ok"), rs.get("state")), (True, "queued"), "REQ client submit")
        req.close()

        # DEALER speaking REQ framing by hand: the envelope comes back as sent.
        raw = Client(d.endpoint)
        raw.send_raw([b"", pack({"op": "ping", "req": 1})])
        f = raw.recv_frames(5)
        c.ok(f is not None and len(f) == 2 and f[0] == b"", "empty delimiter echoed", f)
        if f:
            c.eq(unpack(f[-1]).get("req"), 1, "body after delimiter")
        raw.send_raw([b"hop1", b"hop2", b"", pack({"op": "ping", "req": 2})])
        f = raw.recv_frames(5)
        c.ok(f is not None and f[:3] == [b"hop1", b"hop2", b""], "multi-frame envelope echoed", f)
        # and a bare DEALER gets exactly one frame back
        raw.send(pack({"op": "ping"}))
        f = raw.recv_frames(5)
        c.ok(f is not None and len(f) == 1, "DEALER reply is one frame", f)
        raw.close()
        cl.close()


fqlib.run_test("ingest_basic", main)
