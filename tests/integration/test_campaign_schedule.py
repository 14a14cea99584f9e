#!/usr/bin/python3
"""Issue 16, campaigns with a time: a campaign with not_before is
`scheduled` and runs at its time; a restart of fleetqd (kill -9) that
spans its time still runs it; a campaign running over a SIGTERM restart
goes on with exact counts and finishes; a kill -9 during the fan-out of a large
campaign (4 parts, 20,000 devices), then the same last part sent again,
ends with every device exactly once (the start time fixed before the
fan-out makes the redone submits identical: no idempotency_mismatch)."""
import time

from lib import dispatch as dl
from lib import fqlib

CARS = [dl.vin(180000 + i) for i in range(30)]
BIG = 20000
BIG_CARS = [dl.vin(190000 + i) for i in range(BIG)]  # never dispatched (rate 1/s)


def now_ms():
    return int(time.time() * 1000)


def call(w, op, timeout=60, **kw):
    m = {"op": op, "tenant": dl.TENANT}
    m.update(kw)
    return w.client.call(m, timeout=timeout)


def devices(cars):
    return [{"vin": v, "account": "acct1"} for v in cars]


def camp_events(w, cid):
    w.drain()
    return [e for e in w.all_events if e.get("type") == "campaign" and e.get("id") == cid]


def wait_final(w, cid, timeout):
    end = time.time() + timeout
    while time.time() < end:
        evs = camp_events(w, cid)
        if evs and evs[-1].get("final"):
            return evs
        w.drain(0.2)
    return camp_events(w, cid)


def first_dispatch(w, cid):
    w.drain()
    ats = [e["at"] for e in w.all_events
           if e.get("campaign") == cid and e.get("state") == "dispatching"]
    return min(ats) if ats else None


def body(c, w):
    # ---- runs at its time ----------------------------------------------------
    nb = now_ms() + 2500
    r = call(w, "campaign", key="later", command="flash_lights", devices=devices(CARS[:10]),
             not_before=nb, ttl_ms=60000)
    c.eq((r.get("ok"), r.get("state")), (True, "scheduled"), "accepted, scheduled", r)
    cid = r["id"]
    g = call(w, "campaign_get", key="later")
    c.eq((g.get("state"), g.get("counts"), g.get("not_before"), g.get("started_at")),
         ("scheduled", {"scheduled": 10}, nb, None), "campaign_get before its time")
    evs = wait_final(w, cid, 30)
    c.ok(evs and evs[-1].get("state") == "done" and evs[-1].get("succeeded") == 10,
         "done, every device succeeded", evs[-1:] if evs else None)
    c.ok(any(e["state"] == "scheduled" for e in evs), "a progress event while scheduled")
    fd = first_dispatch(w, cid)
    c.ok(fd is not None and nb <= fd <= nb + 1500, "first dispatch at its time", fd, nb)
    g = call(w, "campaign_get", id=cid)
    c.ok(g.get("started_at") and nb <= g["started_at"] <= nb + 1500, "started_at is its time",
         g.get("started_at"), nb)

    # ---- a restart spans its time ------------------------------------------------
    nb2 = now_ms() + 2000
    r = call(w, "campaign", key="spanned", command="flash_lights", devices=devices(CARS[10:20]),
             not_before=nb2, ttl_ms=60000)
    c.eq(r.get("state"), "scheduled", "second campaign scheduled", r)
    sid = r["id"]
    w.drain()
    w.sub.close()
    w.client.close()
    w.sub = w.client = None
    w.daemon.kill9()
    time.sleep(max(0, (nb2 + 1500 - now_ms()) / 1000))
    c.eq(w.execs(CARS[10]), [], "nothing executed while fleetqd was down")
    w.start_daemon()
    evs = wait_final(w, sid, 30)
    c.ok(evs and evs[-1].get("state") == "done" and evs[-1].get("succeeded") == 10,
         "the spanned campaign ran after the restart", evs[-1:] if evs else None)
    c.eq(sum(len(w.execs(v)) for v in CARS[10:20]), 10, "each car executed it once")
    c.eq(call(w, "campaign_get", key="later").get("state"), "done",
         "the first campaign is still done after the restart")

    # ---- SIGTERM while it runs: it goes on, counts exact ---------------------------
    r = call(w, "campaign", key="running", command="flash_lights", devices=devices(CARS[20:30]),
             rate=3, ttl_ms=60000)
    rid = r["id"]
    time.sleep(1.2)
    w.restart_daemon(kill9=False)
    g = call(w, "campaign_get", id=rid)
    c.eq(g.get("state"), "running", "still running after a SIGTERM restart", g)
    c.eq(sum(g.get("counts", {}).values()), 10, "counts over the restart: every device", g)
    evs = wait_final(w, rid, 30)
    c.ok(evs and evs[-1].get("state") == "done" and evs[-1].get("succeeded") == 10,
         "it finishes after the restart, every device succeeded", evs[-1:] if evs else None)
    c.eq(sum(len(w.execs(v)) for v in CARS[20:30]), 10, "each car executed it once")

    # ---- kill -9 during the fan-out ------------------------------------------------
    parts = [BIG_CARS[i * 5000:(i + 1) * 5000] for i in range(4)]
    for i in range(3):
        r = call(w, "campaign", key="big", command="flash_lights", devices=devices(parts[i]),
                 rate=1, part=i + 1, parts=4)
        c.eq(r.get("state"), "receiving", f"big: part {i + 1} received", r)
    bid = r["id"]
    last = {"op": "campaign", "tenant": dl.TENANT, "key": "big", "command": "flash_lights",
            "devices": devices(parts[3]), "rate": 1, "part": 4, "parts": 4}
    w.client.send(last)
    time.sleep(0.15)
    w.sub.close()
    w.client.close()
    w.sub = w.client = None
    w.daemon.kill9()
    w.start_daemon()
    with open(w.daemon.logpath) as f:
        redo = "done again" in f.read()
    print(f"     killed {'during' if redo else 'after'} the fan-out")
    r = w.client.call(last, timeout=60)
    c.eq((r.get("ok"), r.get("dup"), r.get("devices"), r.get("rejected")), (True, True, BIG, 0),
         "the last part sent again: a dup, every device", r)
    c.eq(r.get("id"), bid, "the same campaign")
    g = call(w, "campaign_get", id=bid)
    total = sum(g.get("counts", {}).values())
    c.eq(total, BIG, "every device exactly once (one command each)", g.get("counts"))
    for i in (0, BIG // 2, BIG - 1):
        one = call(w, "get", key=f"big/{BIG_CARS[i]}").get("command", {})
        c.eq(one.get("campaign"), bid, f"device {i}'s command exists")
        c.eq(one.get("not_before"), g["started_at"] + i * 1000 if i else one.get("not_before"),
             f"device {i} starts at start + i/rate")
    # Without the time fixed before the fan-out, the redone submits would
    # differ (idempotency_mismatch, counted as rejected) or be duplicated.
    with open(w.daemon.logpath) as f:
        text = f.read()
    c.ok("refused" not in text, "no device command refused after the restart")
    a = call(w, "campaign_abort", id=bid)
    c.ok(a.get("ok") and a.get("cancelled", 0) >= BIG - 100, "the big campaign aborted", a)


dl.run("test_campaign_schedule", body, vehicles=[dl.default_vehicle(v) for v in CARS], shards=2,
       tap=False, daemon_opts={"--http-timeout-ms": 15000})
