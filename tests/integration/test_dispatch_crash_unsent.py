"""A crash while a command was `dispatching` but not sent (issue 12,
point 2): the first command for a car without a session is in its
handshake (the car answers after 2.5 s) when fleetqd is killed (-9).  The
handshake has no effect on the car, so after the restart the command is
`queued` again (attempts unchanged, never `unknown`), then handshakes,
is sent once and succeeds; the car executes it once."""
import time

from lib import dispatch as dl

V = dl.vin(156)


def body(c, w):
    w.sim.patch_vehicle(V, {"latency": {"fixed_ms": 2500, "jitter_ms": 0}})
    m = w.tap.mark()
    h = w.submit("cu-honk", "honk_horn", V)
    c.ok(w.wait_state(h, {"dispatching"}, 10), "dispatching", w.states(h))
    deadline = time.monotonic() + 5
    while w.tap.count(V + "/signed_command", m) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    c.eq(w.tap.count(V + "/signed_command", m), 1, "the handshake is out", w.tap.paths(m))
    c.eq(w.states(h), ["queued", "dispatching"], "not sent yet", w.states(h))
    w.sim.patch_vehicle(V, {"latency": None})
    w.restart_daemon(kill9=True)
    c.ok(w.wait_terminal(h, 20), "terminal after the restart", w.states(h))
    w.check_events(c, h, r"queued dispatching queued dispatching sent succeeded")
    w.check_final(c, h, "succeeded", error=None)
    evs = w.evs(h)
    c.eq(evs[2]["attempt"], 0, "re-queued with no attempt", evs[2])
    c.ok("had not been sent" in evs[2]["reason"], "re-queue reason", evs[2]["reason"])
    c.eq([e["attempt"] for e in evs if e["state"] == "sent"], [1], "sent once")
    w.check_execs(c, ["honk_horn"], V)
    c.eq(w.sim.vehicle(V)["vehicle_state"]["honk_count"], 1, "honked once")
    w.check_seq(c)


dl.run("test_dispatch_crash_unsent", body, vehicles=[dl.default_vehicle(V)],
       daemon_opts={"--http-timeout-ms": 6000})
