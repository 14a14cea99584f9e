"""Timeout after send: the simulator holds the connection longer than the
daemon's HTTP timeout.  A non-idempotent command (honk_horn) ends
`unknown` and is never re-sent; an idempotent one (set_charge_limit) is
retried and succeeds, executed once."""
import time

from lib import dispatch as dl

V = dl.vin(113)
HOLD_MS = 5000


def body(c, w):
    warm = w.submit("to-warm", "set_sentry_mode", V, params={"on": True})
    c.ok(w.wait_terminal(warm, 20), "warm-up terminal", w.states(warm))
    w.sim.patch_vehicle(V, {"fail": {"timeout": {"next": 1, "hold_ms": HOLD_MS}}})
    m = w.tap.mark()
    t0 = time.time()
    i = w.submit("to-honk", "honk_horn", V)
    c.ok(w.wait_terminal(i, 20), "honk terminal", w.states(i))
    took = time.time() - t0
    c.ok(took < HOLD_MS / 1000.0, "gave up at its own timeout, before the hold ended", took)
    w.check_events(c, i, r"queued dispatching sent unknown")
    w.check_final(c, i, "unknown", reason_has=("may have",))
    time.sleep(1.0)
    c.eq(w.tap.count(V + "/signed_command", m), 1, "honk sent exactly once", w.tap.paths(m))
    c.eq(w.sim.vehicle(V)["vehicle_state"]["honk_count"], 0, "held request was not executed")
    # Idempotent: retried after the timeout.
    w.sim.patch_vehicle(V, {"fail": {"timeout": {"next": 1, "hold_ms": HOLD_MS}}})
    j = w.submit("to-limit", "set_charge_limit", V, params={"percent": 58})
    c.ok(w.wait_terminal(j, 20), "limit terminal", w.states(j))
    w.check_events(c, j, r"queued dispatching sent (retrying |dispatching )+(\w+ )*sent succeeded")
    w.check_final(c, j, "succeeded", error=None)
    w.check_execs(c, ["set_sentry_mode", "set_charge_limit"], V)
    c.eq(w.sim.vehicle(V)["charge_state"]["charge_limit_soc"], 58, "car state")
    w.check_seq(c)


dl.run("test_dispatch_timeout", body, vehicles=[dl.default_vehicle(V)],
       daemon_opts={"--http-timeout-ms": 1500})
