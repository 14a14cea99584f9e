"""A car without the Vehicle Command Protocol: signed_command answers 422,
the daemon falls back to the REST endpoint (executed once, unsigned) and
remembers it: the next command to that car goes straight to REST, also
after a restart."""
from lib import dispatch as dl

V = dl.vin(107)


def body(c, w):
    a = w.submit("legacy-1", "set_charge_limit", V, params={"percent": 72})
    c.ok(w.wait_terminal(a, 20), "first terminal", w.states(a))
    w.check_events(c, a, r"queued dispatching( \w+)* sent succeeded")
    w.check_final(c, a, "succeeded", error=None, http=200)
    c.ok(w.tap.count(r"POST /api/1/vehicles/\w+/command/set_charge_limit$") == 1,
         "one REST call", w.tap.paths())
    mark = w.tap.mark()
    b = w.submit("legacy-2", "set_charging_amps", V, params={"charging_amps": 16})
    c.ok(w.wait_terminal(b, 20), "second terminal", w.states(b))
    w.check_events(c, b, r"queued dispatching sent succeeded")
    w.check_final(c, b, "succeeded", error=None, http=200)
    c.eq(w.tap.paths(mark), [f"POST /api/1/vehicles/{V}/command/set_charging_amps"],
         "second command: straight to REST, nothing else")
    # Remembered across a restart too.
    w.restart_daemon(kill9=True)
    mark = w.tap.mark()
    d = w.submit("legacy-3", "charge_port_door_open", V)
    c.ok(w.wait_terminal(d, 20), "third terminal", w.states(d))
    w.check_final(c, d, "succeeded", error=None, http=200)
    # The new process asks fleet_status again (its answers are kept in
    # memory), and still no signed attempt.
    c.eq(w.tap.paths(mark), ["POST /api/1/vehicles/fleet_status",
                             f"POST /api/1/vehicles/{V}/command/charge_port_door_open"],
         "after a restart: still straight to REST")
    ex = w.execs(V)
    c.eq([(e["command"], e["domain"], e["counter"]) for e in ex],
         [("set_charge_limit", 0, 0), ("set_charging_amps", 0, 0),
          ("charge_port_door_open", 0, 0)], "executed once each, REST")
    st = w.sim.vehicle(V)["charge_state"]
    c.eq((st["charge_limit_soc"], st["charge_current_request"], st["charge_port_door_open"]),
         (72, 16, True), "car state")
    w.check_seq(c)


dl.run("test_dispatch_legacy", body, vehicles=[dl.default_vehicle(V, legacy=True)])
