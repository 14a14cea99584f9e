"""An offline car (wake_up answers `offline` and does nothing): each poll
that still finds it offline is followed by another wake_up, one poll
interval after the last, until --wake-max (default 3) of them; then the
command ends `failed` (vehicle_asleep) with a reason naming the limit,
never executed, long before its deadline.  `get` shows wakes == 3 and
fleetsim counted 3 wake_ups (issue 12, point 3)."""
import time

from lib import dispatch as dl

V = dl.vin(106)
TTL = 30000


def body(c, w):
    t0 = time.time()
    i = w.submit("offline-1", "set_charge_limit", V, params={"percent": 70}, ttl_ms=TTL)
    c.ok(w.wait_terminal(i, 20), "terminal", w.states(i))
    took = time.time() - t0
    w.check_events(c, i, r"queued dispatching( \w+)* waking failed")
    w.check_final(c, i, "failed", error="vehicle_asleep",
                  reason_has=("after 3 wake_up requests", "--wake-max 3",
                              "vehicle still offline"))
    # wake, poll, wake, poll, wake, poll: about three poll intervals (200 ms).
    c.ok(took < 5, "failed soon, not at the deadline", took)
    c.eq(w.execs(V), [], "never executed")
    c.eq(w.get(i)["wakes"], 3, "get: wakes")
    c.eq(w.sim.vehicle(V)["wake_ups"], 3, "fleetsim: wake_ups")
    wakes = [r for r in w.tap.records() if r["path"].endswith("/wake_up")]
    c.eq(len(wakes), 3, "three wake_up requests", w.tap.paths())
    c.eq(w.tap.count(V), 7, "command, 3 x (wake_up, poll): nothing more", w.tap.paths())
    w.check_seq(c)


dl.run("test_dispatch_offline", body, vehicles=[dl.default_vehicle(V, offline=True)])
