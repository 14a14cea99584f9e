"""429 parks the whole account (Tesla limits per account and app): a 429 to
one car's command keeps the account's other car (on whichever shard) from
sending until Retry-After has passed; the 429'd command stays `retrying`
with a reason naming the rate limit and when the account resumes, and both
succeed after, each executed once.  Then the slow-down before the limit:
with RateLimit-Remaining at 0 (below 10 % of RateLimit-Limit) the account
waits for RateLimit-Reset, so a burst over the simulator's budget meets no
429 at all."""
from lib import dispatch as dl

V1 = dl.vin(150)
V2 = dl.vin(151)
V3 = dl.vin(152)   # on acct2, which has a budget of 6 requests per 3 s
RETRY_AFTER = 2


def body(c, w):
    w.sim.patch_vehicle(V1, {"fail": {"http_429": {"next": 1, "retry_after": RETRY_AFTER}}})
    a = w.submit("acct429-a", "set_charge_limit", V1, params={"percent": 61})
    c.ok(w.wait_state(a, {"retrying"}, 10), "a: retrying after the 429", w.states(a))
    b = w.submit("acct429-b", "set_charging_amps", V2, params={"charging_amps": 12})
    c.ok(w.wait_terminal([a, b], 20), "terminal", w.states(a), w.states(b))
    w.check_events(c, a, r"queued dispatching( \w+)* retrying( \w+)* sent succeeded")
    w.check_events(c, b, r"queued dispatching( \w+)* sent succeeded")
    w.check_final(c, a, "succeeded", error=None)
    w.check_final(c, b, "succeeded", error=None)
    rt = [e for e in w.evs(a) if e["state"] == "retrying"]
    if c.ok(rt, "a has a retrying event", w.evs(a)):
        c.eq(rt[0]["http"], 429, "retrying event carries HTTP 429")
        for s in ("HTTP 429", "account acct1 paused until", "retrying in"):
            c.ok(s in rt[0]["reason"], f"retrying reason names {s!r}", rt[0]["reason"])
    recs = w.tap.records()
    i429 = next((k for k, r in enumerate(recs) if r["status"] == 429), None)
    if c.ok(i429 is not None, "the 429 was answered", recs):
        t429 = recs[i429]["t"]
        v2 = [r for r in recs if V2 in r["path"]]
        c.ok(v2, "the other car was sent its command", recs)
        # Every request of the account after the 429 waits for Retry-After.
        after = recs[i429 + 1:]
        early = [r for r in after if r["t"] - t429 < RETRY_AFTER - 0.1]
        c.eq(early, [], "no request of the account before Retry-After passed")
    w.check_execs(c, ["set_charge_limit"], V1)
    w.check_execs(c, ["set_charging_amps"], V2)

    # Slow down before the limit: 6 requests per 3 s window; fleetqd reads
    # RateLimit-Remaining and waits for the reset instead of meeting a 429.
    mark = w.tap.mark()
    ids = [w.submit(f"pace-{i}", "set_charging_amps", V3, params={"charging_amps": 5 + i},
                    account="acct2") for i in range(8)]
    c.ok(w.wait_terminal(ids, 40), "burst: terminal", [w.states(i) for i in ids])
    for i in ids:
        w.check_final(c, i, "succeeded", error=None, what=f"burst {i}")
    st = [r["status"] for r in w.tap.records(mark)]
    c.eq(st.count(429), 0, "no 429 during the burst", st)
    c.eq(len(w.execs(V3)), 8, "the burst executed once each")
    recs = w.tap.records(mark)
    span = recs[-1]["t"] - recs[0]["t"] if recs else 0
    c.ok(span >= 2.5, "the burst was spread past the window's reset", f"{span:.2f} s", st)
    w.check_seq(c)


dl.run("test_dispatch_429_account", body,
       vehicles=[dl.default_vehicle(v, legacy=True) for v in (V1, V2, V3)],
       accounts=[{"id": "acct1", "vins": [V1, V2]},
                 {"id": "acct2", "vins": [V3],
                  "rate_limit": {"limit": 6, "window_s": 3}}])
