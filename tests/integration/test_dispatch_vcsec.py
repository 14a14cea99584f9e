"""Dispatch of VCSEC commands (door_lock / door_unlock): signed in the
vehicle security domain, executed once each, the car's lock follows."""
from lib import dispatch as dl

V = dl.vin(102)


def body(c, w):
    c.eq(w.sim.vehicle(V)["vehicle_state"]["locked"], False, "car starts unlocked")
    a = w.submit("vcsec-lock", "door_lock", V)
    c.ok(w.wait_terminal(a, 20), "lock terminal", w.states(a))
    w.check_events(c, a, r"queued dispatching sent succeeded")
    w.check_final(c, a, "succeeded", error=None, http=200)
    c.eq(w.sim.vehicle(V)["vehicle_state"]["locked"], True, "car locked")
    b = w.submit("vcsec-unlock", "door_unlock", V)
    c.ok(w.wait_terminal(b, 20), "unlock terminal", w.states(b))
    w.check_events(c, b, r"queued dispatching sent succeeded")
    w.check_final(c, b, "succeeded", error=None, http=200)
    c.eq(w.sim.vehicle(V)["vehicle_state"]["locked"], False, "car unlocked again")
    ex = w.execs(V)
    c.eq([(e["command"], e["domain"]) for e in ex], [("door_lock", 2), ("door_unlock", 2)],
         "each executed once, in the VCSEC domain")
    if len(ex) == 2:
        c.ok(ex[1]["counter"] > ex[0]["counter"], "VCSEC counter increases", ex)
    w.check_seq(c)


dl.run("test_dispatch_vcsec", body, vehicles=[dl.default_vehicle(V, locked=False)])
