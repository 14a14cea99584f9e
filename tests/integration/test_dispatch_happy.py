"""Dispatch end to end, happy path on a modern car: a signed INFOTAINMENT
command (set_charge_limit) goes queued -> dispatching -> sent -> succeeded,
the simulated car executes it exactly once and its state changes."""
from lib import dispatch as dl

V = dl.vin(101)


def body(c, w):
    before = w.sim.vehicle(V)["charge_state"]["charge_limit_soc"]
    c.ok(before != 65, "the car does not start at 65 %", before)
    i = w.submit("happy-1", "set_charge_limit", V, params={"percent": 65})
    c.ok(w.wait_terminal(i, 20), "terminal within 30 s", w.states(i))
    w.check_events(c, i, r"queued dispatching sent succeeded")
    ev = w.check_final(c, i, "succeeded", error=None, http=200)
    c.ok(ev and ev["attempt"] >= 1, "attempt counted", ev)
    c.eq(w.sim.vehicle(V)["charge_state"]["charge_limit_soc"], 65, "car's charge limit")
    ex = w.execs(V)
    c.eq([(e["command"], e["domain"]) for e in ex], [("set_charge_limit", 3)],
         "executed once, signed, INFOTAINMENT")
    c.ok(ex and ex[0]["counter"] > 0, "signed with a session counter", ex)
    c.eq(w.tap.count("wake_up"), 0, "no wake_up for an awake car", w.tap.paths())
    c.eq(w.tap.count(r"/command/"), 0, "no REST command for a modern car", w.tap.paths())
    w.check_seq(c)


dl.run("test_dispatch_happy", body, vehicles=[dl.default_vehicle(V, charge_limit=80)])
