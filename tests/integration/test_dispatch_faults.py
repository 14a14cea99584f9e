"""Vehicle faults per the spec's table: BUSY (1) and INTERNAL (11) are
retried with backoff and then succeed (executed once); a final fault
(7, INSUFFICIENT_PRIVILEGES) fails with `vehicle_fault` and the fault
number, never executed."""
from lib import dispatch as dl

V = dl.vin(114)


def body(c, w):
    warm = w.submit("f-warm", "set_sentry_mode", V, params={"on": True})
    c.ok(w.wait_terminal(warm, 20), "warm-up terminal", w.states(warm))
    pct = 60
    for code, n in ((1, 2), (11, 1)):
        pct += 1
        w.sim.patch_vehicle(V, {"fail": {"vehicle_fault": {"next": n, "code": code}}})
        i = w.submit(f"f-{code}", "set_charge_limit", V, params={"percent": pct})
        c.ok(w.wait_terminal(i, 20), f"fault {code}: terminal", w.states(i))
        w.check_events(c, i, r"queued dispatching sent (\w+ )*retrying (\w+ )*sent succeeded",
                       what=f"fault {code}")
        w.check_final(c, i, "succeeded", error=None, what=f"fault {code}")
        rt = [e for e in w.evs(i) if e["state"] == "retrying"]
        c.ok(rt and all(e["fault"] == code for e in rt), f"fault {code}: retrying carries it", rt)
        c.eq(w.sim.vehicle(V)["charge_state"]["charge_limit_soc"], pct, f"fault {code}: car")
    w.sim.patch_vehicle(V, {"fail": {"vehicle_fault": {"next": 1, "code": 7}}})
    i = w.submit("f-7", "set_charge_limit", V, params={"percent": 90})
    c.ok(w.wait_terminal(i, 20), "fault 7: terminal", w.states(i))
    w.check_events(c, i, r"queued dispatching sent failed", what="fault 7")
    w.check_final(c, i, "failed", error="vehicle_fault", fault=7, what="fault 7")
    w.check_execs(c, ["set_sentry_mode", "set_charge_limit", "set_charge_limit"], V)
    c.eq(w.sim.vehicle(V)["charge_state"]["charge_limit_soc"], pct, "fault 7 not executed")
    w.check_seq(c)


dl.run("test_dispatch_faults", body, vehicles=[dl.default_vehicle(V)])
