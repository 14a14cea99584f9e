"""A routine stop drains (issue 12, point 2): SIGTERM arrives while two
commands are in flight on slow cars (2.5 s latency) and one is queued
behind one of them.  fleetqd launches nothing new, waits for the two
answers (--drain-timeout-ms 8000) and records their real outcomes
(succeeded); the queued one stays `queued` with no attempt and is sent
after the restart.  Nothing becomes `unknown`, every command is executed
exactly once.  SIGHUP before that is logged and the daemon keeps
serving."""
import re
import signal
import time

from lib import dispatch as dl

A, B = dl.vin(152), dl.vin(153)


def body(c, w):
    # SIGHUP never stops fleetqd (point 2): it says so and goes on serving.
    w.daemon.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    c.ok(w.daemon.alive(), "alive after SIGHUP")
    wa = w.submit("dr-warm-a", "set_sentry_mode", A, params={"on": True})
    wb = w.submit("dr-warm-b", "set_sentry_mode", B, params={"on": True})
    c.ok(w.wait_terminal([wa, wb], 20), "warm-up terminal (served after SIGHUP)")
    with open(w.daemon.logpath, "rb") as f:
        c.ok(b"SIGHUP received" in f.read(), "SIGHUP is logged")
    for v in (A, B):
        w.sim.patch_vehicle(v, {"latency": {"fixed_ms": 2500, "jitter_ms": 0}})
    m = w.tap.mark()
    h = w.submit("dr-honk", "honk_horn", A)
    q = w.submit("dr-flash", "flash_lights", A)
    s = w.submit("dr-limit", "set_charge_limit", B, params={"percent": 74})
    c.ok(w.wait_state([h, s], {"sent"}, 10), "both sent", w.states(h), w.states(s))
    time.sleep(0.3)
    t0 = time.monotonic()
    w.restart_daemon(kill9=False)  # SIGTERM: exit status 0 is checked there
    took = time.monotonic() - t0
    c.ok(took < 7.0, f"the stop waited for the answers only ({took:.1f} s)")
    w.drain(0.5)
    w.fill_from_history()
    w.check_events(c, h, r"queued dispatching sent succeeded")
    w.check_final(c, h, "succeeded", error=None)
    w.check_events(c, s, r"queued dispatching sent succeeded")
    w.check_final(c, s, "succeeded", error=None)
    # The queued one: never sent, still queued, then sent after the restart.
    for v in (A, B):
        w.sim.patch_vehicle(v, {"latency": None})
    c.ok(w.wait_terminal(q, 20), "queued one terminal after the restart", w.states(q))
    w.check_events(c, q, r"queued dispatching sent succeeded")
    w.check_final(c, q, "succeeded", error=None)
    sts = [e["state"] for e in w.evs(q)]
    c.ok("unknown" not in sts, "never unknown", sts)
    c.eq([e["attempt"] for e in w.evs(q) if e["state"] == "sent"], [1], "sent once", w.evs(q))
    for i in (h, s, q):
        c.ok(all(e["state"] != "unknown" for e in w.evs(i)), f"{i}: nothing unknown")
    c.eq(w.tap.count(A + "/signed_command", m), 2, "honk and flash sent once each",
         w.tap.paths(m))
    c.eq(w.tap.count(B + "/signed_command", m), 1, "limit sent once", w.tap.paths(m))
    w.check_execs(c, ["set_sentry_mode", "honk_horn", "flash_lights"], A)
    w.check_execs(c, ["set_sentry_mode", "set_charge_limit"], B)
    c.eq(w.sim.vehicle(B)["charge_state"]["charge_limit_soc"], 74, "car B at the set-point")
    with open(w.daemon.logpath.replace(".2.log", ".1.log"), "rb") as f:
        log = f.read().decode(errors="replace")
    c.ok(re.search(r"stopping", log), "the first daemon logged its stop")
    w.check_seq(c)


dl.run("test_dispatch_drain", body, vehicles=[dl.default_vehicle(A), dl.default_vehicle(B)],
       daemon_opts={"--http-timeout-ms": 6000, "--drain-timeout-ms": 8000})
