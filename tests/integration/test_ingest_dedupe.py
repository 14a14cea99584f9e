#!/usr/bin/python3
"""Issue 2, dedupe: (tenant, key) with the same content -> the original id,
dup: true and the current state; different content -> idempotency_mismatch;
another tenant with the same key -> a new command; concurrent duplicates
from two connections resolve to one command."""

from lib import fqlib
from lib.fqlib import Client, Daemon, pipeline, vin


def main(c):
    with Daemon(shards=4, extra=["--no-dispatch"], accounts=["acct1", "acct2", "a"]) as d:
        cl = Client(d.endpoint)
        base = dict(command="set_charge_limit", vin_=vin(7), params={"percent": 70})

        r1 = cl.submit("acme", "dk-1", **base)
        c.eq((r1.get("ok"), r1.get("dup"), r1.get("state")), (True, False, "queued"), "first")
        id1 = r1.get("id")

        r2 = cl.submit("acme", "dk-1", req="again", **base)
        c.eq((r2.get("ok"), r2.get("id"), r2.get("dup"), r2.get("state"), r2.get("req")),
             (True, id1, True, "queued", "again"), "same content -> same id, dup")

        # ttl_ms and coalesce are delivery options, not content: a retry that
        # recomputes them is still the same request.
        r3 = cl.submit("acme", "dk-1", ttl_ms=1234, **base)
        c.eq((r3.get("ok"), r3.get("id"), r3.get("dup")), (True, id1, True),
             "same content, other ttl_ms -> dup")

        # the dup reply reports the current state, not the original one
        cc = cl.cancel(id1)
        c.eq(cc.get("ok"), True, "cancel the original", cc)
        r4 = cl.submit("acme", "dk-1", **base)
        c.eq((r4.get("ok"), r4.get("id"), r4.get("dup"), r4.get("state")),
             (True, id1, True, "cancelled"), "dup after cancel reports cancelled")

        # different content under the same key
        variants = [
            ("params", dict(command="set_charge_limit", vin_=vin(7), params={"percent": 71})),
            ("command", dict(command="door_lock", vin_=vin(7))),
            ("vin", dict(command="set_charge_limit", vin_=vin(8), params={"percent": 70})),
            ("account", dict(command="set_charge_limit", vin_=vin(7), params={"percent": 70},
                             account="acct2")),
        ]
        for what, kw in variants:
            e = cl.submit("acme", "dk-1", req=what, **kw)
            c.eq((e.get("ok"), e.get("error"), e.get("req")),
                 (False, "idempotency_mismatch", what), f"different {what} -> mismatch")
            c.ok("key" in str(e.get("message", "")), f"mismatch message names the key ({what})", e)

        # the same key under another tenant is another command
        o = cl.submit("other", "dk-1", **base)
        c.eq((o.get("ok"), o.get("dup")), (True, False), "other tenant, same key -> new")
        c.ok(o.get("id") not in (None, id1), "other tenant gets a new id", o, id1)
        c.eq(cl.get(tenant="other", key="dk-1").get("command", {}).get("state"), "queued",
             "other tenant's command is queued")
        c.eq(cl.get(tenant="acme", key="dk-1").get("command", {}).get("state"), "cancelled",
             "acme's command is still cancelled")

        # float params: 70 and 70.0 are different types for an INT parameter,
        # so 70.0 must not silently match; whatever the daemon answers, it
        # must not be a second accepted command under the same key.
        f = cl.submit("acme", "dk-1", command="set_charge_limit", vin_=vin(7),
                      params={"percent": 70.0})
        c.ok(f.get("ok") is False or f.get("id") == id1,
             "70.0 vs 70 never yields a second command for one key", f)

        # Two connections racing with the same keys: one command per key.
        a, b = Client(d.endpoint), Client(d.endpoint)
        reqs = [{"op": "submit", "tenant": "race", "key": f"rk-{i}", "account": "a",
                 "vin": vin(100 + i % 10), "command": "door_lock"} for i in range(300)]
        ta, ra = fqlib.bg(pipeline, a, reqs)
        tb, rb = fqlib.bg(pipeline, b, reqs)
        ta.join(60)
        tb.join(60)
        ok = all(not isinstance(x, Exception) for x in ra + rb) and ra and rb
        c.ok(ok, "both racing producers got all replies", ra[:1], rb[:1])
        if ok:
            (repa, orda), (repb, ordb) = ra[0], rb[0]
            ids_differ = fresh = 0
            for i in range(300):
                x, y = repa[orda[i]], repb[ordb[i]]
                if not (x.get("ok") and y.get("ok")) or x.get("id") != y.get("id"):
                    ids_differ += 1
                fresh += (x.get("dup") is False) + (y.get("dup") is False)
            c.eq(ids_differ, 0, "racing duplicates share one id per key")
            c.eq(fresh, 300, "exactly one non-dup reply per key")
        a.close()
        b.close()
        cl.close()


fqlib.run_test("ingest_dedupe", main)
