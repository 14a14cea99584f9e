#!/usr/bin/python3
"""Issue 16, campaign abort against fleetsim.  An abort mid-way cancels
the device commands still scheduled or queued (reason "campaign <id>
aborted"), reports how many, and no device command is dispatched after
its reply (those in flight finish); cancelled + succeeded = devices.
Aborting again: ok, cancelled 0; aborting a done campaign:
not_cancellable.  With max_failure_ratio, a campaign whose cars are half
unpaired aborts by itself after 20 finished devices, with the reason; a
device command's get and events name the campaign."""
import time

from lib import dispatch as dl

N = 200
GOOD = [dl.vin(170000 + i) for i in range(N)]
BAD = [dl.vin(171000 + i) for i in range(40)]  # unpaired in fleetsim
MIXED = [v for pair in zip(GOOD[:40], BAD) for v in pair]  # good, bad, good, bad...


def now_ms():
    return int(time.time() * 1000)


def call(w, op, **kw):
    m = {"op": op, "tenant": dl.TENANT}
    m.update(kw)
    return w.client.call(m, timeout=60)


def campaign(w, key, cars, **kw):
    return call(w, "campaign", key=key, command="flash_lights",
                devices=[{"vin": v, "account": "acct1"} for v in cars], **kw)


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


def dev_events(w, cid):
    """Device command events of the campaign, by command id."""
    w.drain()
    out = {}
    for e in w.all_events:
        if e.get("type") != "campaign" and e.get("campaign") == cid:
            out.setdefault(e["id"], []).append(e)
    return out


def body(c, w):
    # ---- abort mid-way -------------------------------------------------------
    r = campaign(w, "abort-me", GOOD, rate=20, ttl_ms=120000)
    c.ok(r.get("ok"), "campaign accepted", r)
    cid = r["id"]
    time.sleep(1.5)
    a = call(w, "campaign_abort", key="abort-me")
    t_reply = now_ms()
    c.ok(a.get("ok"), "abort accepted", a)
    c.eq((a.get("id"), a.get("state")), (cid, "aborted"), "abort reply: id, state")
    n_cancel = a.get("cancelled", -1)
    c.ok(N // 2 < n_cancel < N, "most devices cancelled, some ran", n_cancel)
    evs = wait_final(w, cid, 30)
    c.ok(evs and evs[-1].get("final") and evs[-1].get("state") == "aborted",
         "final progress event: aborted", evs[-1:] if evs else None)
    # Those in flight at the abort finish: wait for every device to end.
    end = time.time() + 30
    g = {}
    while time.time() < end:
        g = call(w, "campaign_get", id=cid)
        if sum(g.get("counts", {}).values()) == N and set(g["counts"]) <= {"succeeded",
                                                                             "cancelled"}:
            break
        time.sleep(0.3)
    c.eq(g.get("state"), "aborted", "campaign_get: aborted")
    c.eq(g.get("reason"), "aborted by request", "campaign_get: reason")
    c.ok(g.get("finished_at"), "finished_at set", g.get("finished_at"))
    k = g.get("counts", {})
    c.eq(k.get("cancelled"), n_cancel, "cancelled count = the abort's reply")
    c.eq(k.get("succeeded", 0) + k.get("cancelled", 0), N, "succeeded + cancelled = devices", k)
    devs = dev_events(w, cid)
    late = [i for i, es in devs.items()
            if any(e["state"] == "dispatching" and e["at"] > t_reply for e in es)]
    c.eq(late, [], "no device command dispatched after the abort reply")
    cancelled = [es[-1] for es in devs.values() if es[-1]["state"] == "cancelled"]
    c.eq(len(cancelled), n_cancel, "cancelled events")
    c.ok(all(e["reason"] == f"campaign {cid} aborted" for e in cancelled),
         "cancelled with reason 'campaign <id> aborted'", cancelled[:1])
    c.eq(len(w.execs()), k.get("succeeded", 0), "the car executed only those that ran")
    again = call(w, "campaign_abort", id=cid)
    c.eq((again.get("ok"), again.get("cancelled"), again.get("state")), (True, 0, "aborted"),
         "aborting again: ok, nothing cancelled", again)
    one = call(w, "get", key=f"abort-me/{GOOD[0]}")
    c.eq(one.get("command", {}).get("campaign"), cid, "get of a device command names the campaign")
    c.ok(all(e.get("campaign") == cid for es in devs.values() for e in es),
         "device command events carry the campaign")

    # ---- a done campaign cannot be aborted --------------------------------------
    d = campaign(w, "small", GOOD[:3])
    c.ok(d.get("ok"), "small campaign", d)
    evs = wait_final(w, d["id"], 20)
    c.ok(evs and evs[-1]["state"] == "done", "small campaign done", evs[-1:] if evs else None)
    nd = call(w, "campaign_abort", key="small")
    c.eq((nd.get("error"), nd.get("state")), ("not_cancellable", "done"),
         "abort of a done campaign: not_cancellable", nd)
    c.eq(call(w, "campaign_abort", key="nope").get("error"), "not_found", "unknown campaign")

    # ---- auto-abort ----------------------------------------------------------------
    r = campaign(w, "half-bad", MIXED, rate=20, max_failure_ratio=0.25, ttl_ms=120000)
    c.ok(r.get("ok"), "mixed campaign accepted", r)
    mid = r["id"]
    evs = wait_final(w, mid, 40)
    last = evs[-1] if evs else {}
    c.eq((last.get("final"), last.get("state")), (True, "aborted"), "auto-aborted", last)
    g = call(w, "campaign_get", id=mid)
    reason = g.get("reason", "")
    c.ok(reason.startswith("auto-abort: ") and "finished devices failed" in reason and
         reason.endswith("max_failure_ratio 0.25"), "auto-abort reason", reason)
    k = g.get("counts", {})
    c.ok(g.get("failed", 0) >= 5 and k.get("cancelled", 0) > 0,
         "failures counted, the rest cancelled", k)
    c.ok(k.get("succeeded", 0) + g.get("failed", 0) >= 20, "after at least 20 finished", k)
    c.eq(g.get("max_failure_ratio"), 0.25, "campaign_get: max_failure_ratio")
    bad = call(w, "get", key=f"half-bad/{BAD[0]}").get("command", {})
    c.eq((bad.get("state"), bad.get("error"), bad.get("campaign")), ("failed", "key_not_paired", mid),
         "an unpaired car's command failed, and names the campaign")


dl.run("test_campaign_abort", body,
       vehicles=[dl.default_vehicle(v) for v in GOOD] +
       [dl.default_vehicle(v, paired=False) for v in BAD],
       shards=2, tap=False, daemon_opts={"--http-timeout-ms": 15000})
