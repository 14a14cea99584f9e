"""A plain 503 (issue 12, point 4): Tesla's client reads every 503 to a
vehicle command as "not awake", so the daemon takes the wake path instead
of resending the same request until the deadline.

The simulator's `http_503` fault answers every request of the car,
wake_up included: a wake_up refused with 503 is retried after the backoff
by sending the command again.  Two 503s (command, wake_up) then success:
executed exactly once.  503 to everything: at most --wake-max (3) wake_ups,
then `failed` (vehicle_asleep) naming the limit, never executed, long
before the deadline.  The 503 answers come before the simulator's car, so
it counts no wake_ups."""
from lib import dispatch as dl

V = dl.vin(110)
V2 = dl.vin(135)


def body(c, w):
    w.sim.patch_vehicle(V, {"fail": {"http_503": {"next": 2}}})
    i = w.submit("t503-1", "set_charge_limit", V, params={"percent": 64})
    c.ok(w.wait_terminal(i, 20), "terminal", w.states(i))
    w.check_events(c, i, r"queued dispatching waking retrying( \w+)* sent succeeded")
    w.check_final(c, i, "succeeded", error=None, http=200)
    wk = [e for e in w.evs(i) if e["state"] == "waking"]
    c.ok(wk and wk[0]["http"] == 503 and "HTTP 503" in wk[0]["reason"],
         "the 503 led to waking", wk)
    c.eq(sum(1 for r in w.tap.records() if r["status"] == 503), 2, "two 503s were answered")
    c.eq(w.tap.count(r"POST /api/1/vehicles/\w+/wake_up"), 1, "one wake_up", w.tap.paths())
    c.eq(w.get(i)["wakes"], 1, "get: wakes")
    w.check_execs(c, ["set_charge_limit"], V)
    c.eq(w.sim.vehicle(V)["charge_state"]["charge_limit_soc"], 64, "car state")
    # 503 on every try: bounded by --wake-max, not retried until the deadline.
    w.sim.patch_vehicle(V2, {"fail": {"http_503": {"prob": 1.0}}})
    m = w.tap.mark()
    j = w.submit("t503-forever", "set_charge_limit", V2, params={"percent": 52}, ttl_ms=20000)
    c.ok(w.wait_terminal(j, 15), "forever: terminal", w.states(j))
    w.check_events(c, j, r"queued dispatching waking( \w+)* failed", what="forever")
    w.check_final(c, j, "failed", error="vehicle_asleep", what="forever",
                  reason_has=("after 3 wake_up requests", "--wake-max 3"))
    c.eq(w.get(j)["wakes"], 3, "forever: get wakes")
    c.eq(w.tap.count(r"POST /api/1/vehicles/\w+/wake_up", since=m), 3, "forever: three wake_ups",
         w.tap.paths(m))
    c.eq(w.tap.count(V2, since=m), 7, "forever: 4 tries of the command and 3 wake_ups",
         w.tap.paths(m))
    c.eq(w.sim.vehicle(V2)["wake_ups"], 0, "forever: the 503s came before the car")
    c.eq(w.execs(V2), [], "forever: never executed")
    w.check_seq(c)


dl.run("test_dispatch_503", body, vehicles=[dl.default_vehicle(V), dl.default_vehicle(V2)])
