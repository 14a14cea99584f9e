#!/usr/bin/python3
"""Issue 2, cancel and expiry: cancelling a queued command ends it
`cancelled` with an event; cancelling again is not_cancellable with the
state; ttl_ms 300 ends a queued command `expired` within ~2 s, with an event
and the state in `get`."""

import time

from lib import fqlib
from lib.fqlib import Client, Daemon, Sub, vin


def state_of(reply):
    return reply.get("state") or reply.get("command", {}).get("state")


def main(c):
    # --no-dispatch: nothing is sent, so commands stay queued until
    # cancelled or expired.
    with Daemon(shards=2, extra=["--no-dispatch"], accounts=["acct1"]) as d:
        cl = Client(d.endpoint)
        sub = Sub(d.publish, ["cx/"])

        r = cl.submit("cx", "c-1", vin_=vin(1), command="door_unlock")
        cid = r.get("id")
        ev = sub.collect(until=lambda e: e.get("id") == cid and e.get("state") == "queued")
        c.ok(ev and ev[-1][1].get("state") == "queued", "queued event first", ev)

        cc = cl.call({"op": "cancel", "id": cid, "req": "c1"})
        c.eq((cc.get("ok"), state_of(cc), cc.get("req")), (True, "cancelled", "c1"),
             "cancel a queued command")
        ev = sub.collect(until=lambda e: e.get("id") == cid and e.get("state") == "cancelled")
        last = ev[-1][1] if ev else {}
        c.eq((last.get("id"), last.get("prev"), last.get("state")), (cid, "queued", "cancelled"),
             "cancelled event (prev queued)")
        g = cl.get(cid).get("command", {})
        c.eq(g.get("state"), "cancelled", "get shows cancelled")
        c.eq([t.get("state") for t in g.get("transitions", [])], ["queued", "cancelled"],
             "transitions queued -> cancelled")

        again = cl.call({"op": "cancel", "id": cid, "req": "c2"})
        c.eq((again.get("ok"), again.get("error"), again.get("state"), again.get("req")),
             (False, "not_cancellable", "cancelled", "c2"), "cancel again: not_cancellable + state")
        c.ok(isinstance(again.get("message"), str) and again["message"], "with a message", again)
        # no second event for the refused cancel
        extra = sub.collect(timeout=0.5)
        c.eq([e for _, e in extra if e.get("id") == cid], [], "no event for a refused cancel")

        # cancel by tenant + key; unknown: not_found
        r2 = cl.submit("cx", "c-2", vin_=vin(2), command="door_lock")
        c2 = cl.cancel(tenant="cx", key="c-2")
        c.eq((c2.get("ok"), state_of(c2)), (True, "cancelled"), "cancel by tenant+key")
        c.eq(cl.get(r2.get("id")).get("command", {}).get("state"), "cancelled", "state via get")
        nf = cl.cancel("ffffffffffffffff")
        c.eq((nf.get("ok"), nf.get("error")), (False, "not_found"), "cancel unknown id")
        nf = cl.cancel(tenant="cx", key="never")
        c.eq((nf.get("ok"), nf.get("error")), (False, "not_found"), "cancel unknown key")

        # expiry: 300 ms TTL, nothing dispatches it (--no-dispatch), so it expires
        t0 = time.monotonic()
        r3 = cl.submit("cx", "e-1", vin_=vin(3), command="honk_horn", ttl_ms=300)
        eid = r3.get("id")
        c.eq((r3.get("ok"), r3.get("state")), (True, "queued"), "short-TTL submit queued")
        ev = sub.collect(timeout=3, until=lambda e: e.get("id") == eid and e.get("state") != "queued")
        took = time.monotonic() - t0
        last = ev[-1][1] if ev else {}
        c.eq((last.get("id"), last.get("state"), last.get("prev")), (eid, "expired", "queued"),
             "expired event")
        c.ok(took < 2.5, f"expired within ~2 s (took {took:.2f} s)")
        c.ok(isinstance(last.get("reason"), str), "expired event has a reason string", last)
        g = cl.get(eid).get("command", {})
        c.eq(g.get("state"), "expired", "get shows expired")
        ce = cl.cancel(eid)
        c.eq((ce.get("ok"), ce.get("error"), ce.get("state")), (False, "not_cancellable", "expired"),
             "cancel an expired command")

        # A longer TTL is not expired early: still queued after 1 s.
        r4 = cl.submit("cx", "e-2", vin_=vin(4), command="honk_horn", ttl_ms=5000)
        time.sleep(1.0)
        c.eq(cl.get(r4.get("id")).get("command", {}).get("state"), "queued",
             "ttl 5 s: still queued after 1 s")
        # Many short TTLs expire together, each with one event.
        ids = [cl.submit("cx", f"e-many-{i}", vin_=vin(10 + i % 5), command="flash_lights",
                         ttl_ms=200 + 10 * i).get("id") for i in range(20)]
        seen = set()

        def all_expired(e):
            if e.get("state") == "expired" and e.get("id") in ids:
                seen.add(e["id"])
            return len(seen) == len(ids)

        ev = sub.collect(timeout=3, until=all_expired)
        exp = [e for _, e in ev if e.get("state") == "expired" and e.get("id") in ids]
        c.eq(sorted(e["id"] for e in exp), sorted(ids), "20 short TTLs: one expired event each")
        sub.close()
        cl.close()


fqlib.run_test("ingest_cancel_expiry", main)
