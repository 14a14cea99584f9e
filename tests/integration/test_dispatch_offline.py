"""An offline car (wake_up answers `offline` and does nothing): the command
waits in `waking` and ends `expired` at its deadline, never executed; the
daemon does not hammer the car while waiting."""
import time

from lib import dispatch as dl

V = dl.vin(106)
TTL = 3000


def body(c, w):
    t0 = time.time()
    i = w.submit("offline-1", "set_charge_limit", V, params={"percent": 70}, ttl_ms=TTL)
    c.ok(w.wait_terminal(i, 20), "terminal", w.states(i))
    took = time.time() - t0
    w.check_events(c, i, r"queued dispatching( \w+)* waking( \w+)* expired")
    w.check_final(c, i, "expired", error="expired")
    c.ok(took >= (TTL - 300) / 1000.0, "not before the deadline", took)
    c.ok(took < TTL / 1000.0 + 5, "soon after the deadline", took)
    c.eq(w.execs(V), [], "never executed")
    n = w.tap.count(V)
    # wake poll 200 ms over 3 s: at most ~15 polls plus a few tries; a
    # client hammering in a loop would make hundreds.
    c.ok(n <= 40, "requests while waiting stay few", n, w.tap.paths()[:50])
    c.ok(w.tap.count(r"wake_up") >= 1, "tried to wake it", w.tap.paths())
    w.check_seq(c)


dl.run("test_dispatch_offline", body, vehicles=[dl.default_vehicle(V, offline=True)])
