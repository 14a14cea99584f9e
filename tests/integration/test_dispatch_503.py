"""Transient 503 (not executed): retried with backoff, then succeeds; the
car executes the command exactly once."""
import dispatchlib as dl

V = dl.vin(110)


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
    w.check_seq(c)


dl.run("test_dispatch_503", body, vehicles=[dl.default_vehicle(V)])
