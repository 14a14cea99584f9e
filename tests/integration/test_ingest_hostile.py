#!/usr/bin/python3
"""Issue 2, hostile input: malformed and hostile requests (wrong types, huge
declared sizes, deep nesting, truncated bytes, non-map bodies, missing or
empty frames, trailing garbage, unknown keys, bad VINs, unknown commands,
bad params...) each get the right error code and a message naming the
field, and the daemon keeps serving.  A body above the maximum message size
drops that connection only.  Finally a seeded barrage of random and mutated
bodies: every one is answered."""

import struct

from lib import fqlib
from lib.fqlib import Client, Daemon, pack, pipeline, unpack, vin

WIRE_CODES = {"bad_request", "unsupported_version", "unknown_command", "bad_param",
              "idempotency_mismatch", "not_found", "not_cancellable", "forbidden", "busy",
              "storage_full", "too_large", "internal", "unknown_account"}
BR = {"bad_request"}
BP = {"bad_param"}
BRP = {"bad_request", "bad_param"}

V = vin(1)


def sub(**kw):
    m = {"op": "submit", "tenant": "h", "key": "hk", "account": "a", "vin": V,
         "command": "door_lock"}
    for k, v in kw.items():
        if v is DROP:
            m.pop(k, None)
        else:
            m[k] = v
    return m


DROP = object()


def nested(depth):
    x = 1
    for _ in range(depth):
        x = [x]
    return x


def raw_map(pairs):
    """A map packed by hand, so keys may repeat or be of any type."""
    out = bytes([0x80 | len(pairs)])
    for k, v in pairs:
        out += pack(k) + pack(v)
    return out


GOOD = pack(sub())
NO_ECHO = {"params nested 40 deep"}
CASES = [
    # (name, body bytes or dict, codes, words one of which the message names)
    ("array body", pack([1, 2]), BR, ["map"]),
    ("string body", pack("submit"), BR, ["map"]),
    ("int body", pack(5), BR, ["map"]),
    ("nil body", pack(None), BR, ["map"]),
    ("empty body", b"", BR, ["empty"]),
    ("truncated map", GOOD[:-4], BR, ["truncat", "short", "end", "malformed", "incomplete", "byte"]),
    ("trailing garbage", GOOD + b"\x00\x01", BR, ["trailing"]),
    ("never-used byte 0xc1", b"\xc1", BR, ["map", "malformed", "0xc1", "invalid"]),
    ("map32 declaring 2^32-1 pairs", b"\xdf\xff\xff\xff\xff\xa2op\xa4ping", BR,
     ["map", "size", "entries", "truncat", "malformed", "exceed", "count"]),
    ("str32 declaring 4 GiB", b"\x81\xa2op\xdb\xff\xff\xff\xf0ping", BR,
     ["op", "length", "truncat", "malformed", "exceed", "byte"]),
    ("array32 huge in params", bytes([0x87]) + GOOD[1:] + pack("params") +
     b"\xdd\xff\xff\xff\xff\x01", BRP, ["params", "truncat", "exceed", "malformed", "byte"]),
    ("params nested 40 deep", sub(command="set_charge_limit", params={"percent": nested(40)}),
     BRP, ["percent", "params", "deep", "depth", "nest"]),
    ("req nested", {"op": "ping", "req": nested(20)}, BR, ["req", "deep", "depth", "nest"]),
    ("missing op", {"tenant": "h"}, BR, ["op"]),
    ("op is int", {"op": 3}, BR, ["op"]),
    ("unknown op", {"op": "explode"}, BR, ["op", "explode"]),
    ("unknown key", sub(colour="red"), BR, ["colour"]),
    ("int key", raw_map([("op", "ping"), (7, "x")]), BR, ["key", "string"]),
    ("duplicate op", raw_map([("op", "ping"), ("op", "ping")]), BR, ["op", "duplicate"]),
    ("version 2", {"op": "ping", "v": 2}, {"unsupported_version"}, ["v", "version"]),
    ("version as string", {"op": "ping", "v": "1"}, BR | {"unsupported_version"},
     ["v", "version"]),
    ("tenant missing", sub(tenant=DROP), BR, ["tenant"]),
    ("tenant with space", sub(tenant="a b"), BR, ["tenant"]),
    ("tenant 65 chars", sub(tenant="t" * 65), BR, ["tenant"]),
    ("tenant as bin", sub(tenant=b"h"), BR, ["tenant"]),
    ("tenant invalid utf-8", bytes([0x86]) + pack("op") + pack("submit") + pack("tenant") +
     b"\xa2\xff\xfe" + pack("key") + pack("k") + pack("account") + pack("a") + pack("vin") +
     pack(V) + pack("command") + pack("door_lock"), BR, ["tenant", "utf"]),
    ("key empty", sub(key=""), BR, ["key"]),
    ("key 129 bytes", sub(key="k" * 129), BR, ["key"]),
    ("account int", sub(account=12), BR, ["account"]),
    ("vin 16 chars", sub(vin=V[:16]), BR, ["vin"]),
    ("vin with I", sub(vin="I" + V[1:]), BR, ["vin"]),
    ("vin lower case", sub(vin=V.lower()), BR, ["vin"]),
    ("vin and site", sub(site=5), BR, ["vin", "site"]),
    ("no vin nor site", sub(vin=DROP), BR, ["vin", "site"]),
    ("site 0", sub(vin=DROP, site=0, command="backup", params={"backup_reserve_percent": 5}),
     BR, ["site"]),
    ("site negative", sub(vin=DROP, site=-4, command="backup",
                          params={"backup_reserve_percent": 5}), BR, ["site"]),
    ("site as string", sub(vin=DROP, site="42", command="backup",
                           params={"backup_reserve_percent": 5}), BR, ["site"]),
    ("unknown command", sub(command="self_destruct"), {"unknown_command"},
     ["self_destruct", "command"]),
    ("site command on a vehicle", sub(command="backup", params={"backup_reserve_percent": 5}),
     {"unknown_command"}, ["backup", "command"]),
    ("params as list", sub(command="set_charge_limit", params=[80]), BRP, ["params"]),
    ("unknown param", sub(command="set_charge_limit", params={"percent": 80, "colour": 1}), BP,
     ["colour"]),
    ("param out of range", sub(command="set_charge_limit", params={"percent": 120}), BP,
     ["percent"]),
    ("param wrong type", sub(command="set_charge_limit", params={"percent": "80"}), BP,
     ["percent"]),
    ("required param missing", sub(command="set_charge_limit", params={}), BP | BR,
     ["percent", "params"]),
    ("param not a choice", sub(command="actuate_trunk", params={"which_trunk": "middle"}), BP,
     ["which_trunk"]),
    ("param NaN", sub(command="set_temps", params={"driver_temp": float("nan"),
                                                   "passenger_temp": 20.0}), BP,
     ["driver_temp"]),
    ("param int key", sub(command="set_charge_limit", params={1: 80}), BP | BR, ["params"]),
    ("params too large", sub(command="set_vehicle_name", params={"vehicle_name": "x" * 20000}),
     {"too_large", "bad_param"}, ["params", "vehicle_name"]),
    ("ttl_ms 0", sub(ttl_ms=0), BRP, ["ttl_ms"]),
    ("ttl_ms above a day", sub(ttl_ms=86400001), BRP, ["ttl_ms"]),
    ("ttl_ms string", sub(ttl_ms="300"), BRP, ["ttl_ms"]),
    ("coalesce string", sub(coalesce="yes"), BR, ["coalesce"]),
    ("req is a map", {"op": "ping", "req": {"a": 1}}, BR, ["req"]),
    ("history limit 1001", {"op": "history", "shard": 0, "after": 0, "limit": 1001}, BR,
     ["limit"]),
    ("history shard out of range", {"op": "history", "shard": 99, "after": 0, "limit": 1},
     BR | BP | {"not_found"}, ["shard"]),
    ("history shard negative", {"op": "history", "shard": -1, "after": 0, "limit": 1}, BR,
     ["shard"]),
    ("get without id or key", {"op": "get"}, BR, ["id", "key"]),
    ("get with id and key", {"op": "get", "id": "0000000000000001", "tenant": "h", "key": "k"},
     BR, ["id", "key"]),
    ("cancel id as int", {"op": "cancel", "id": 5}, BR, ["id"]),
    ("ping with tenant", {"op": "ping", "tenant": "h"}, BR, ["tenant"]),
    ("ext value", b"\x82\xa2op\xa4ping\xa3req\xd4\x01\x02", BR,
     ["req"]),
]


def main(c):
    with Daemon(shards=2, extra=["--no-dispatch"], accounts=["a"]) as d:
        cl = Client(d.endpoint, timeout=5)
        c.ok(len(CASES) >= 30, f"{len(CASES)} hostile cases")
        for n, (name, body, codes, words) in enumerate(CASES):
            # A body refused while its structure is being walked (nesting
            # too deep) may be refused before `req` was reached.
            with_req = isinstance(body, dict) and "req" not in body
            check_echo = with_req and name not in NO_ECHO
            if isinstance(body, dict):
                if with_req:
                    body = dict(body, req=1000 + n)
                body = pack(body)
            cl.send_raw([body])
            f = cl.recv_frames(5)
            if not c.ok(f is not None, f"{name}: answered"):
                continue
            try:
                r = unpack(f[-1])
            except Exception as e:  # a reply that is not msgpack is a failure
                c.ok(False, f"{name}: reply is msgpack", repr(e), f)
                continue
            msg = str(r.get("message", ""))
            c.ok(r.get("ok") is False and r.get("error") in codes,
                 f"{name}: error in {sorted(codes)}", r)
            c.ok(any(w.lower() in msg.lower() for w in words),
                 f"{name}: message names one of {words}", msg)
            if check_echo:
                c.eq(r.get("req"), 1000 + n, f"{name}: req echoed")
            p = cl.ping()
            c.eq(p.get("ok"), True, f"{name}: daemon still serves")

        # empty frames around the body: the envelope comes back as sent
        cl.send_raw([b"env", b""])
        f = cl.recv_frames(5)
        c.ok(f is not None and f[0] == b"env" and unpack(f[-1]).get("error") == "bad_request",
             "multi-frame message with an empty last frame: bad_request", f)
        cl.send_raw([b"", b"", b""])
        f = cl.recv_frames(5)
        c.ok(f is not None and unpack(f[-1]).get("error") == "bad_request",
             "three empty frames: bad_request", f)

        # Above the maximum message size: that connection is dropped without
        # a reply, the daemon keeps serving everybody else.
        big = Client(d.endpoint, timeout=2)
        big.send(pack({"op": "ping", "req": "x" * (300 * 1024)}))
        c.ok(big.recv_frames(2) is None, "oversized message gets no reply")
        big.close()
        c.eq(cl.ping().get("ok"), True, "daemon serves after an oversized message")
        # just below the cap: answered one way or the other, never dropped
        near = Client(d.endpoint, timeout=5)
        near.send({"op": "ping", "req": "y" * (200 * 1024)})
        f = near.recv_frames(5)
        c.ok(f is not None and isinstance(unpack(f[-1]).get("ok"), bool),
             "a 200 KiB request (below the cap) is answered")
        near.close()

        # Seeded barrage: random bytes and mutated valid requests, pipelined;
        # each must be answered with a well-formed reply.
        rnd = fqlib.seeded("ingest_hostile", 4242)
        bodies = []
        seeds = [pack(sub(key=f"m{i}")) for i in range(5)] + [
            pack({"op": "history", "shard": 1, "after": 0, "limit": 5}),
            pack(sub(command="set_charge_limit", params={"percent": 60}, key="mp")),
        ]
        for i in range(3000):
            if i % 3 == 0:
                b = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 64)))
            else:
                b = bytearray(rnd.choice(seeds))
                for _ in range(rnd.randrange(1, 4)):
                    op = rnd.randrange(3)
                    pos = rnd.randrange(len(b))
                    if op == 0:
                        b[pos] = rnd.randrange(256)
                    elif op == 1:
                        del b[pos:pos + rnd.randrange(1, 4)]
                    else:
                        b[pos:pos] = bytes([rnd.randrange(256)])
                b = bytes(b)
            bodies.append(b)
        fz = Client(d.endpoint, timeout=10)
        answered, bad = 0, []
        for start in range(0, len(bodies), 200):
            chunk = bodies[start:start + 200]
            for b in chunk:
                fz.send_raw([b])
            for b in chunk:
                f = fz.recv_frames(10)
                if f is None:
                    bad.append(("no reply", b))
                    break
                answered += 1
                try:
                    r = unpack(f[-1])
                    if not isinstance(r, dict) or not isinstance(r.get("ok"), bool) or (
                            r["ok"] is False and r.get("error") not in WIRE_CODES):
                        bad.append((r, b))
                except Exception as e:  # malformed reply
                    bad.append((repr(e), b))
        c.eq(answered, len(bodies), "every barrage body answered")
        c.eq(bad[:3], [], "every barrage reply well formed with a wire error code")
        c.eq(cl.ping().get("ok"), True, "daemon serves after the barrage")
        fz.close()
        cl.close()


fqlib.run_test("ingest_hostile", main)
