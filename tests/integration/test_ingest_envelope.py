#!/usr/bin/python3
"""Envelope frames (issue 13, defect 7): one limit everywhere, 8 frames
before the body (the routing id fleetqd's ROUTER adds not counted), each at
most 255 bytes.  At the limit a request is served by the ingress, a shard
(by device, and by every shard for a lookup by tenant + key or a submit's
dedupe check elsewhere) and the auth thread alike, its envelope echoed; over
it, `bad_request`, the envelope echoed (cut to the limits), and never a
hidden frame taken as the body.  Before: the shard kept 10 frames and took
the 8th envelope frame (a honk_horn) as the body of a door_lock request;
admin requests with 14 envelope frames got no reply at all."""

import zmq

from lib import fqlib
from lib.fqlib import Client, Daemon, pack, unpack, vin

LIMIT = 8


def submit(key, command, v=None):
    return {"op": "submit", "tenant": "env", "key": key, "account": "acct1",
            "vin": v or vin(1), "command": command, "req": key}


def main(c):
    with Daemon(shards=3, extra=["--no-dispatch"], accounts=["acct1"]) as d:
        cl = Client(d.endpoint, timeout=5)

        def ask(frames, what):
            cl.send_raw(frames)
            f = cl.recv_frames(5)
            if not c.ok(f is not None, f"{what}: answered"):
                return None, None
            return f[:-1], unpack(f[-1])

        # 8 envelope frames, the last of them a honk_horn submit, then a
        # door_lock body: the body is what counts.
        hidden = pack(submit("env-hidden", "honk_horn"))
        env = [b"hop%d" % i for i in range(LIMIT - 1)] + [hidden]
        e, r = ask(env + [pack(submit("env-8", "door_lock"))], "8 envelope frames")
        c.eq(e, env, "8 envelope frames echoed as sent")
        c.eq((r or {}).get("ok"), True, "8 envelope frames: the body is served", r)
        g = cl.get(tenant="env", key="env-8")
        c.eq(g.get("command", {}).get("command"), "door_lock", "the body's command was queued", g)
        g = cl.get(tenant="env", key="env-hidden")
        c.eq(g.get("error"), "not_found", "the hidden frame was never taken as a body", g)

        # 9: over the limit, refused, envelope echoed, nothing stored.
        env9 = [b"hop%d" % i for i in range(LIMIT)] + [hidden]
        e, r = ask(env9 + [pack(submit("env-9", "door_lock"))], "9 envelope frames")
        c.eq(e, env9, "9 envelope frames echoed")
        c.eq(((r or {}).get("ok"), (r or {}).get("error"), (r or {}).get("req")),
             (False, "bad_request", "env-9"), "9 envelope frames: bad_request, req echoed", r)
        c.ok("at most 8" in (r or {}).get("message", ""), "the message states the limit", r)
        for k in ("env-9", "env-hidden"):
            c.eq(cl.get(tenant="env", key=k).get("error"), "not_found", f"{k}: nothing stored")

        # Lookups by tenant + key go to every shard ('F' frames carry a
        # token besides the envelope), and so does a submit whose key was
        # first used on another shard: at the limit both are served.
        e, r = ask(env + [pack({"op": "get", "tenant": "env", "key": "env-8", "req": 5})],
                   "get by tenant + key with 8 envelope frames")
        c.eq(e, env, "lookup: envelope echoed")
        c.eq(((r or {}).get("ok"), (r or {}).get("command", {}).get("command")),
             (True, "door_lock"), "lookup with 8 envelope frames finds the command", r)
        other = next(vin(i) for i in range(2, 200)
                     if cl.submit("env", f"probe-{i}", vin_=vin(i), account="acct1").get("id", "")[:2]
                     != cl.get(tenant="env", key="env-8").get("command", {}).get("id", "")[:2])
        e, r = ask(env + [pack(submit("env-8", "door_lock", other))],
                   "dedupe check on another shard with 8 envelope frames")
        c.eq(e, env, "dedupe check: envelope echoed")
        c.eq(((r or {}).get("ok"), (r or {}).get("error")), (False, "idempotency_mismatch"),
             "the key is found on the shard that holds it", r)

        # Admin (the auth thread): 8 frames served, 14 refused; both answered.
        e, r = ask(env[:-1] + [b"x"] + [pack({"op": "admin", "action": "account_list",
                                              "req": 8})], "admin with 8 envelope frames")
        c.eq(((r or {}).get("ok"), (r or {}).get("req")), (True, 8), "admin at the limit", r)
        c.eq(e, env[:-1] + [b"x"], "admin: envelope echoed")
        env14 = [b"a%d" % i for i in range(14)]
        e, r = ask(env14 + [pack({"op": "admin", "action": "account_list", "req": 14})],
                   "admin with 14 envelope frames")
        c.eq(((r or {}).get("ok"), (r or {}).get("error"), (r or {}).get("req")),
             (False, "bad_request", 14), "admin with 14 envelope frames: bad_request", r)
        c.eq(e, env14, "admin with 14: envelope echoed")

        # A frame above 255 bytes: refused, echoed cut to 255.
        big = b"B" * 1000
        e, r = ask([b"hop", big, pack({"op": "ping", "req": "big"})], "a 1000-byte envelope frame")
        c.eq(((r or {}).get("error"), (r or {}).get("req")), ("bad_request", "big"),
             "a 1000-byte envelope frame: bad_request", r)
        c.ok("255" in (r or {}).get("message", ""), "names the frame limit", r)
        c.eq(e, [b"hop", big[:255]], "echoed cut to 255 bytes")
        e, r = ask([b"h" * 255, pack({"op": "ping", "req": "255"})], "a 255-byte frame")
        c.eq(((r or {}).get("ok"), e), (True, [b"h" * 255]), "255 bytes: served, echoed whole")

        # 100 frames: refused; the first 63 come back (the rest are never
        # read), the last of them not mistaken for a body.
        many = [b"m%d" % i for i in range(100)]
        e, r = ask(many, "100 frames")
        c.eq((r or {}).get("error"), "bad_request", "100 frames: bad_request", r)
        c.eq(e, many[:63], "the first 63 frames echoed")

        # REQ: the delimiter it adds is an envelope frame too.
        rq = Client(d.endpoint, kind=zmq.REQ, timeout=5)
        rq.sock.send_multipart([b"r%d" % i for i in range(LIMIT - 1)] +
                               [pack({"op": "ping", "req": "req7"})])
        f = rq.recv_frames(5)
        c.ok(f is not None and unpack(f[-1]).get("req") == "req7" and unpack(f[-1]).get("ok"),
             "REQ with 7 frames of its own (8 with its delimiter): served", f)
        rq.sock.send_multipart([b"r%d" % i for i in range(LIMIT)] +
                               [pack({"op": "ping", "req": "req8"})])
        f = rq.recv_frames(5)
        c.ok(f is not None and unpack(f[-1]).get("error") == "bad_request"
             and unpack(f[-1]).get("req") == "req8",
             "REQ with 8 frames of its own (9 envelope frames): the refusal reaches it", f)
        rq.close()
        c.eq(cl.ping().get("ok"), True, "still serving")
        cl.close()


fqlib.run_test("ingest_envelope", main)
