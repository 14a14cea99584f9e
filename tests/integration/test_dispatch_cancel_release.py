"""A cancelled head releases its car at once (issue 12, point 1): the head
of a car's queue names an account fleetqd does not know yet, so the car is
held for it; cancelling it must let the next command of that car go now,
not when the cancelled one's deadline would have passed (30 s here).  The
cancelled one is never sent; the next one is sent once and succeeds well
under a second after the cancel."""
import time

from lib import dispatch as dl

V = dl.vin(151)


def body(c, w):
    m = w.tap.mark()
    a = w.submit("cr-head", "set_charge_limit", V, params={"percent": 61},
                 account="not-yet", ttl_ms=30000)
    b = w.submit("cr-next", "set_sentry_mode", V, params={"on": True}, ttl_ms=30000)
    c.ok(not w.wait_terminal([a, b], 0.8), "both wait behind the unknown account",
         w.states(a), w.states(b))
    c.eq(w.state(b), "queued", "the next one is still queued")
    t0 = time.monotonic()
    r = w.client.cancel(a)
    c.ok(r.get("ok") and r["command"]["state"] == "cancelled", "cancel of the head", r)
    c.ok(w.wait_terminal(b, 10), "next one terminal", w.states(b))
    took = time.monotonic() - t0
    c.ok(took < 1.0, f"next one done {took:.3f} s after the cancel (want < 1 s)")
    w.check_events(c, a, r"queued cancelled")
    w.check_final(c, a, "cancelled", http=None)
    w.check_events(c, b, r"queued dispatching sent succeeded")
    w.check_final(c, b, "succeeded", error=None)
    g = w.get(a)
    c.eq(g.get("attempts", 0), 0, "cancelled one never attempted", g)
    w.check_execs(c, ["set_sentry_mode"], V)
    c.eq(w.tap.count(V + "/signed_command", m), 2, "one handshake and one command",
         w.tap.paths(m))
    w.check_seq(c)


dl.run("test_dispatch_cancel_release", body, vehicles=[dl.default_vehicle(V)])
