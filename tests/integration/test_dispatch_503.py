"""Transient 503 (not executed): retried with backoff, then succeeds; the
car executes the command exactly once.  A car that answers 503 every time
is retried with backoff until the deadline: `expired`, never executed."""
from lib import dispatch as dl

V = dl.vin(110)
V2 = dl.vin(135)


def body(c, w):
    w.sim.patch_vehicle(V, {"fail": {"http_503": {"next": 2}}})
    i = w.submit("t503-1", "set_charge_limit", V, params={"percent": 64})
    c.ok(w.wait_terminal(i, 20), "terminal", w.states(i))
    w.check_events(c, i, r"queued dispatching( \w+)* retrying( \w+)* sent succeeded")
    w.check_final(c, i, "succeeded", error=None, http=200)
    rt = [e for e in w.evs(i) if e["state"] == "retrying"]
    c.ok(rt and all(e["http"] == 503 for e in rt), "retrying events carry HTTP 503", rt)
    c.eq(sum(1 for r in w.tap.records() if r["status"] == 503), 2, "two 503s were answered")
    w.check_execs(c, ["set_charge_limit"], V)
    c.eq(w.sim.vehicle(V)["charge_state"]["charge_limit_soc"], 64, "car state")
    # 503 on every try: retried until the deadline, then `expired`, never executed.
    w.sim.patch_vehicle(V2, {"fail": {"http_503": {"prob": 1.0}}})
    j = w.submit("t503-forever", "set_charge_limit", V2, params={"percent": 52}, ttl_ms=2000)
    c.ok(w.wait_terminal(j, 20), "forever: terminal", w.states(j))
    w.check_events(c, j, r"queued dispatching( \w+)* retrying( \w+)* expired", what="forever")
    w.check_final(c, j, "expired", error="expired", what="forever")
    n = w.tap.count(V2)
    c.ok(2 <= n <= 2000 // 200 + 3, "retried with backoff (200 ms), not in a tight loop", n)
    c.eq(w.execs(V2), [], "forever: never executed")
    w.check_seq(c)


dl.run("test_dispatch_503", body, vehicles=[dl.default_vehicle(V), dl.default_vehicle(V2)])
