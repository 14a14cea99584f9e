"""Sessions are persisted and reused after a restart: after one handshake
per (VIN, domain), neither a graceful restart nor a kill -9 leads to a new
handshake (the simulator's handshake counter stays put) and the counters
keep going up.  A session save reserves counters (256 at a time), so after a
restart the counter jumps ahead, never back and never by more than that."""
from lib import dispatch as dl

V = dl.vin(121)


def run_pair(c, w, tag, pct):
    a = w.submit(f"sr-{tag}-info", "set_charge_limit", V, params={"percent": pct})
    b = w.submit(f"sr-{tag}-vcsec", "door_lock" if pct % 2 else "door_unlock", V)
    c.ok(w.wait_terminal([a, b], 20), f"{tag}: terminal", w.states(a), w.states(b))
    for i in (a, b):
        w.check_events(c, i, r"queued dispatching sent succeeded", what=tag)
        w.check_final(c, i, "succeeded", error=None, what=tag)


def body(c, w):
    run_pair(c, w, "first", 61)
    h1 = w.sim.stats()["handshakes"]
    c.eq(h1, 2, "one handshake per domain")
    w.restart_daemon(kill9=False)
    run_pair(c, w, "after-term", 62)
    c.eq(w.sim.stats()["handshakes"], h1, "no handshake after a graceful restart")
    w.restart_daemon(kill9=True)
    run_pair(c, w, "after-kill", 63)
    c.eq(w.sim.stats()["handshakes"], h1, "no handshake after kill -9")
    ex = w.execs(V)
    c.eq(len(ex), 6, "six executions", ex)
    for d in (2, 3):
        cn = [e["counter"] for e in ex if e["domain"] == d]
        c.eq(cn, sorted(set(cn)), f"domain {d}: counters strictly increase")
        jumps = [b - a for a, b in zip(cn, cn[1:])]
        c.ok(all(1 <= j <= 257 for j in jumps) and max(jumps) > 1,
             f"domain {d}: restarts go on past the reserved counters", cn)
    w.check_seq(c)


dl.run("test_dispatch_session_reuse", body, vehicles=[dl.default_vehicle(V)])
