"""An asleep car with a backlog: the first command finds the car asleep,
the daemon sends exactly one wake_up for the whole backlog, waits (state
`waking`) until the car is online, then all commands succeed in submit
order, each executed once.  The poll interval (2 s) is longer than the
car takes to wake (1.5 s): a poll that found it still asleep would send
another wake_up (issue 12, at most --wake-max)."""
from lib import dispatch as dl

V = dl.vin(105)
WAKE_MS = 1500


def body(c, w):
    ids = [w.submit("wake-1", "set_charge_limit", V, params={"percent": 70}),
           w.submit("wake-2", "set_charging_amps", V, params={"charging_amps": 20}),
           w.submit("wake-3", "set_sentry_mode", V, params={"on": True}),
           w.submit("wake-4", "door_lock", V)]
    c.ok(w.wait_terminal(ids, 45), "terminal", [w.states(i) for i in ids])
    first = w.check_events(c, ids[0], r"queued dispatching( \w+)* waking( \w+)* sent succeeded")
    for i in ids[1:]:
        w.check_events(c, i, r"queued .* sent succeeded")
    for i in ids:
        w.check_final(c, i, "succeeded", error=None)
    c.eq(w.tap.count(r"POST /api/1/vehicles/\w+/wake_up"), 1, "exactly one wake_up",
         w.tap.paths())
    c.eq(w.sim.vehicle(V)["wake_ups"], 1, "fleetsim counted one wake_up")
    c.eq(w.get(ids[0])["wakes"], 1, "get: the first command woke the car once")
    c.eq([w.get(i)["wakes"] for i in ids[1:]], [0, 0, 0], "get: the backlog needed no wake")
    w.check_execs(c, ["set_charge_limit", "set_charging_amps", "set_sentry_mode", "door_lock"], V)
    st = w.sim.vehicle(V)
    c.eq((st["state"], st["charge_state"]["charge_limit_soc"],
          st["charge_state"]["charge_current_request"], st["vehicle_state"]["sentry_mode"],
          st["vehicle_state"]["locked"]), ("online", 70, 20, True, True), "car state")
    # The wait was real: success came no earlier than the car could wake.
    waited = dl.elapsed_between(w.evs(ids[0]), "waking", "succeeded")
    c.ok(waited is not None and waited >= (WAKE_MS - 200) / 1000.0,
         "succeeded only after the car woke", waited, first)
    done = [w.final(i)["at"] for i in ids]
    c.eq(done, sorted(done), "finished in submit order")
    w.check_seq(c)


dl.run("test_dispatch_wake", body,
       vehicles=[dl.default_vehicle(V, asleep=True, wake_ms=WAKE_MS, locked=False)],
       daemon_opts={"--wake-poll-ms": 2000})
