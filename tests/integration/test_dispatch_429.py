"""429 with Retry-After: the device is parked (no request to it) until
Retry-After has passed, then the command succeeds, executed once."""
from lib import dispatch as dl

V = dl.vin(108)
RETRY_AFTER = 2


def body(c, w):
    w.sim.patch_vehicle(V, {"fail": {"http_429": {"next": 1, "retry_after": RETRY_AFTER}}})
    a = w.submit("rl-1", "set_charge_limit", V, params={"percent": 61})
    b = w.submit("rl-2", "set_charging_amps", V, params={"charging_amps": 12})
    c.ok(w.wait_terminal([a, b], 20), "terminal", w.states(a), w.states(b))
    w.check_events(c, a, r"queued dispatching( \w+)* retrying( \w+)* sent succeeded")
    w.check_events(c, b, r"queued .*succeeded")
    w.check_final(c, a, "succeeded", error=None)
    w.check_final(c, b, "succeeded", error=None)
    rt = [e for e in w.evs(a) if e["state"] == "retrying"]
    c.ok(rt and rt[0]["http"] == 429, "retrying event carries HTTP 429", rt)
    recs = [r for r in w.tap.records() if V in r["path"]]
    i429 = next((k for k, r in enumerate(recs) if r["status"] == 429), None)
    if c.ok(i429 is not None, "the 429 was answered", recs):
        nxt = recs[i429 + 1:]
        c.ok(nxt, "requests after the 429", recs)
        if nxt:
            gap = nxt[0]["t"] - recs[i429]["t"]
            c.ok(gap >= RETRY_AFTER - 0.1, "parked until Retry-After", f"gap {gap:.3f} s")
    w.check_execs(c, ["set_charge_limit", "set_charging_amps"], V)
    w.check_seq(c)


dl.run("test_dispatch_429", body, vehicles=[dl.default_vehicle(V)])
