"""A command whose deadline passes while it waits behind a slow one ends
`expired` without ever being dispatched: queued -> expired, no request,
never executed.  The slow one still succeeds."""
from lib import dispatch as dl

V = dl.vin(116)


def body(c, w):
    warm = w.submit("eq-warm", "set_sentry_mode", V, params={"on": True})
    c.ok(w.wait_terminal(warm, 20), "warm-up terminal", w.states(warm))
    w.sim.patch_vehicle(V, {"latency": {"fixed_ms": 3000, "jitter_ms": 0}})
    m = w.tap.mark()
    a = w.submit("eq-slow", "set_charge_limit", V, params={"percent": 71})
    c.ok(w.wait_state(a, {"sent"}, 10), "slow one is out", w.states(a))
    b = w.submit("eq-late", "set_charging_amps", V, params={"charging_amps": 9}, ttl_ms=1000)
    c.ok(w.wait_terminal([a, b], 20), "terminal", w.states(a), w.states(b))
    w.check_events(c, a, r"queued dispatching sent succeeded")
    w.check_final(c, a, "succeeded", error=None)
    w.check_events(c, b, r"queued expired")
    w.check_final(c, b, "expired", error="expired", http=None)
    c.eq(w.tap.count("signed_command", m), 1, "only the slow one was sent", w.tap.paths(m))
    w.check_execs(c, ["set_sentry_mode", "set_charge_limit"], V)
    c.ok(w.sim.vehicle(V)["charge_state"]["charge_current_request"] != 9, "amps unchanged")
    w.check_seq(c)


dl.run("test_dispatch_expire_queued", body, vehicles=[dl.default_vehicle(V)],
       daemon_opts={"--http-timeout-ms": 8000})
