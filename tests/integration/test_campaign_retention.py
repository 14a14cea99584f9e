#!/usr/bin/python3
"""Issue 16, retention of campaigns (--retention-s 3, --dedupe-window-s 2):

* a campaign key dedupes for the dedupe window, counted from the time its
  device commands were stored: inside it the same key with other devices
  is idempotency_mismatch; past it the key makes a new campaign (new id,
  its device commands stored again, none rejected), campaign_get by key
  finds the new one and by id the old one still;
* a campaign that is done or aborted is deleted (record, parts, key row)
  once --retention-s passed since it finished: campaign_get then answers
  not_found, by id and by key, also after a restart; a campaign still
  running is never deleted, however old.
"""
import time

from lib import fqlib
from lib.fqlib import Client, Daemon

RETENTION_S = 3
WINDOW_S = 2
TENANT = "acme"


def devs(cars):
    return [{"vin": v, "account": "acct1"} for v in cars]


def body(c):
    d = Daemon(shards=2, accounts=["acct1"],
               extra=["--no-dispatch", "--retention-s", str(RETENTION_S),
                      "--dedupe-window-s", str(WINDOW_S)])
    d.start()
    cl = Client(d.endpoint, timeout=30)

    def call(op, **kw):
        m = {"op": op, "tenant": TENANT}
        m.update(kw)
        return cl.call(m)

    def camp(key, cars, **kw):
        return call("campaign", key=key, command="flash_lights", devices=devs(cars), **kw)

    cars_a = [fqlib.vin(900 + i) for i in range(6)]
    cars_b = [fqlib.vin(920 + i) for i in range(4)]
    cars_r = [fqlib.vin(940 + i) for i in range(3)]

    # A: aborted.  B: done (its commands expire).  R: running for ever.
    ra = camp("ka", cars_a)
    c.ok(ra.get("ok") and ra.get("devices") == 6, "campaign A accepted", ra)
    a = call("campaign_abort", key="ka")
    c.eq((a.get("state"), a.get("cancelled")), ("aborted", 6), "A aborted, 6 cancelled", a)
    rb = camp("kb", cars_b, ttl_ms=300)
    c.ok(rb.get("ok"), "campaign B accepted", rb)
    rr = camp("kr", cars_r)
    c.ok(rr.get("ok"), "campaign R accepted", rr)
    fqlib.wait_for(lambda: call("campaign_get", id=rb["id"]).get("state") == "done", 10)
    gb = call("campaign_get", id=rb["id"])
    c.eq(gb.get("state"), "done", "B done once its commands expired", gb)
    t_done = time.time()

    # Inside the window: the key still dedupes.
    r = camp("ka", cars_a[:3])
    c.eq(r.get("error"), "idempotency_mismatch", "key A inside the window: mismatch", r)
    r = camp("ka", cars_a)
    c.eq((r.get("id"), r.get("dup")), (ra["id"], True), "key A inside the window: dup", r)

    # Past the window (from the fan-out of A): a new campaign.
    time.sleep(WINDOW_S + 0.3)
    r2 = camp("ka", cars_a)
    c.ok(r2.get("ok") and r2.get("id") != ra["id"] and r2.get("dup") is False,
         "key A past the window: a new campaign", r2, ra["id"])
    c.eq((r2.get("devices"), r2.get("rejected")), (6, 0),
         "its device commands were stored again (their keys left the window too)", r2)
    g = call("campaign_get", key="ka")
    c.eq(g.get("id"), r2.get("id"), "by key: the new campaign", g)
    c.eq(sum(g.get("counts", {}).values()), 6, "its 6 device commands are counted", g)
    g = call("campaign_get", id=ra["id"])
    c.eq(g.get("state"), "aborted", "by id: the old one, until retention", g)

    # Past the retention: A and B go, R (running) and the new A stay.
    wait = t_done + RETENTION_S + 1.5 - time.time()
    if wait > 0:
        time.sleep(wait)

    def gone(cid):
        return call("campaign_get", id=cid).get("error") == "not_found"

    fqlib.wait_for(lambda: gone(ra["id"]) and gone(rb["id"]), 5)
    for name, cid in (("A", ra["id"]), ("B", rb["id"])):
        g = call("campaign_get", id=cid)
        c.eq(g.get("error"), "not_found", f"{name} deleted past --retention-s", g)
    g = call("campaign_get", key="kb")
    c.eq(g.get("error"), "not_found", "B by key: not_found", g)
    g = call("campaign_get", id=rr["id"])
    c.eq(g.get("state"), "running", "R, running, is kept", g)
    g = call("campaign_get", id=r2.get("id"))
    c.eq(g.get("state"), "running", "the new A is kept (running)", g)
    # Its own window is over too: like a command's key, not found by key.
    g = call("campaign_get", key="ka")
    c.eq(g.get("error"), "not_found", "the new A past its window: not found by key", g)
    with open(d.logpath) as f:
        log = f.read()
    c.ok(f"campaign {ra['id']} (tenant {TENANT}, key ka) removed" in log,
         "the removal is logged", log[-600:])

    # Deleted on disk too: still gone after a restart.
    cl.close()
    c.eq(d.term(), 0, "clean stop")
    d.start()
    cl = Client(d.endpoint, timeout=30)
    for name, cid in (("A", ra["id"]), ("B", rb["id"])):
        g = call("campaign_get", id=cid)
        c.eq(g.get("error"), "not_found", f"{name} still gone after a restart", g)
    g = call("campaign_get", id=rr["id"])
    c.eq(g.get("state"), "running", "R still there after a restart", g)
    cl.close()
    d.term()


if __name__ == "__main__":
    fqlib.run_test("test_campaign_retention", body)
