"""Cancel while queued behind a sleeping car: the first command is waking
the car, the second is still `queued` and is cancelled (queued ->
cancelled, never sent, never executed); the others succeed in order.
Cancelling the one already waking is refused (not_cancellable)."""
from lib import dispatch as dl

V = dl.vin(117)


def body(c, w):
    a = w.submit("cx-1", "set_charge_limit", V, params={"percent": 69})
    b = w.submit("cx-2", "set_charging_amps", V, params={"charging_amps": 7})
    d = w.submit("cx-3", "set_sentry_mode", V, params={"on": True})
    c.ok(w.wait_state(a, {"waking"}, 10), "first one is waking", w.states(a))
    r = w.client.cancel(b)
    c.ok(r.get("ok") and r["command"]["state"] == "cancelled", "cancel of the queued one", r)
    r = w.client.cancel(a)
    c.eq((r.get("ok"), r.get("error")), (False, "not_cancellable"), "cancel of the waking one", r)
    c.ok(w.wait_terminal([a, b, d], 20), "terminal", w.states(a), w.states(b), w.states(d))
    w.check_events(c, b, r"queued cancelled")
    w.check_final(c, b, "cancelled", http=None)
    for i in (a, d):
        w.check_events(c, i, r"queued .*sent succeeded")
        w.check_final(c, i, "succeeded", error=None)
    w.check_execs(c, ["set_charge_limit", "set_sentry_mode"], V)
    c.ok(w.sim.vehicle(V)["charge_state"]["charge_current_request"] != 7, "amps unchanged")
    w.check_seq(c)


dl.run("test_dispatch_cancel", body,
       vehicles=[dl.default_vehicle(V, asleep=True, wake_ms=2500)],
       # Polls that find the car asleep send another wake_up (at most
       # --wake-max, 3): poll slowly enough for the car to wake in time.
       daemon_opts={"--wake-poll-ms": 1500})
