"""A car that does not have the fleet key on its whitelist: the command
fails with `key_not_paired`, the reason starts with the SDK's text and
carries the pairing link https://tesla.com/_ak/<pairing domain>; the car
never executes anything (INFOTAINMENT and VCSEC alike).  The same when the
key is removed from a car that had a session: the command's fault 3
(UNKNOWN_KEY_ID) fails it with the same reason and `fault` 3."""
from lib import dispatch as dl

V = dl.vin(104)
V2 = dl.vin(134)


def body(c, w):
    a = w.submit("unpaired-limit", "set_charge_limit", V, params={"percent": 66})
    b = w.submit("unpaired-lock", "door_lock", V)
    c.ok(w.wait_terminal([a, b], 20), "terminal", w.states(a), w.states(b))
    for i in (a, b):
        w.check_events(c, i, r"queued dispatching (sent )?failed")
        w.check_final(c, i, "failed", error="key_not_paired", reason_prefix=dl.PAIRING_PREFIX,
                      reason_has=(dl.PAIRING_LINK,))
    c.eq(w.execs(V), [], "never executed")
    st = w.sim.vehicle(V)
    c.eq(st["charge_state"]["charge_limit_soc"], 80, "charge limit unchanged")
    c.eq(st["vehicle_state"]["locked"], False, "lock unchanged")
    # Fault 3 on a command: the key was paired (session cached) and then
    # removed from the car; the command itself is answered UNKNOWN_KEY_ID.
    warm = w.submit("unpaired-warm", "set_charge_limit", V2, params={"percent": 55})
    c.ok(w.wait_terminal(warm, 20), "warm-up terminal", w.states(warm))
    w.check_final(c, warm, "succeeded", error=None)
    w.sim.patch_vehicle(V2, {"paired": False})
    i = w.submit("unpaired-fault3", "set_charge_limit", V2, params={"percent": 57})
    c.ok(w.wait_terminal(i, 20), "fault 3 terminal", w.states(i))
    w.check_events(c, i, r"queued dispatching sent failed", what="fault 3")
    w.check_final(c, i, "failed", error="key_not_paired", reason_prefix=dl.PAIRING_PREFIX,
                  reason_has=(dl.PAIRING_LINK,), fault=3, what="fault 3")
    w.check_execs(c, ["set_charge_limit"], V2)
    c.eq(w.sim.vehicle(V2)["charge_state"]["charge_limit_soc"], 55, "fault 3: not executed")
    w.check_seq(c)


dl.run("test_dispatch_unpaired", body,
       vehicles=[dl.default_vehicle(V, paired=False, locked=False, charge_limit=80),
                 dl.default_vehicle(V2)])
