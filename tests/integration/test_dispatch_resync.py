"""Session resync: after a session exists, the car reboots (new epochs via
/sim).  The next command is refused with INCORRECT_EPOCH plus fresh session
info; the daemon resyncs from it and retries once: succeeded, executed
once, exactly one faulted attempt.  Works for both domains."""
from lib import dispatch as dl

V = dl.vin(115)


def body(c, w):
    a = w.submit("rs-warm-info", "set_charge_limit", V, params={"percent": 60})
    b = w.submit("rs-warm-vcsec", "door_lock", V)
    c.ok(w.wait_terminal([a, b], 20), "warm-up terminal", w.states(a), w.states(b))
    s0 = w.sim.stats()
    w.sim.reboot(V)
    i = w.submit("rs-info", "set_charge_limit", V, params={"percent": 66})
    c.ok(w.wait_terminal(i, 20), "INFOTAINMENT terminal", w.states(i))
    w.check_events(c, i, r"queued dispatching sent (\w+ )*sent succeeded", what="infotainment")
    w.check_final(c, i, "succeeded", error=None, what="infotainment")
    s1 = w.sim.stats()
    c.eq(s1["signed_fault"] - s0["signed_fault"], 1, "one faulted attempt (INCORRECT_EPOCH)",
         s0, s1)
    j = w.submit("rs-vcsec", "door_unlock", V)
    c.ok(w.wait_terminal(j, 20), "VCSEC terminal", w.states(j))
    w.check_final(c, j, "succeeded", error=None, what="vcsec")
    s2 = w.sim.stats()
    c.eq(s2["signed_fault"] - s1["signed_fault"], 1, "one faulted attempt (VCSEC)", s1, s2)
    w.check_execs(c, ["set_charge_limit", "door_lock", "set_charge_limit", "door_unlock"], V)
    st = w.sim.vehicle(V)
    c.eq((st["charge_state"]["charge_limit_soc"], st["vehicle_state"]["locked"]), (66, False),
         "car state")
    w.check_seq(c)


dl.run("test_dispatch_resync", body, vehicles=[dl.default_vehicle(V, locked=False)])
