"""A car that does not have the fleet key on its whitelist: the command
fails with `key_not_paired`, the reason starts with the SDK's text and
carries the pairing link https://tesla.com/_ak/<pairing domain>; the car
never executes anything (INFOTAINMENT and VCSEC alike)."""
import dispatchlib as dl

V = dl.vin(104)


def body(c, w):
    a = w.submit("unpaired-limit", "set_charge_limit", V, params={"percent": 66})
    b = w.submit("unpaired-lock", "door_lock", V)
    c.ok(w.wait_terminal([a, b], 30), "terminal", w.states(a), w.states(b))
    for i in (a, b):
        w.check_events(c, i, r"queued dispatching (sent )?failed")
        w.check_final(c, i, "failed", error="key_not_paired", reason_prefix=dl.PAIRING_PREFIX,
                      reason_has=(dl.PAIRING_LINK,))
    c.eq(w.execs(V), [], "never executed")
    st = w.sim.vehicle(V)
    c.eq(st["charge_state"]["charge_limit_soc"], 80, "charge limit unchanged")
    c.eq(st["vehicle_state"]["locked"], False, "lock unchanged")
    w.check_seq(c)


dl.run("test_dispatch_unpaired", body,
       vehicles=[dl.default_vehicle(V, paired=False, locked=False, charge_limit=80)])
