"""Outcomes after an authentic request (issue 12, points 8 and 9).

8: fleetsim's `garbled_reply` runs the command and answers a 200 whose car
   reply cannot be decoded: a non-idempotent command ends `unknown`, never
   `failed`, sent once; an idempotent one is sent again and succeeds.
9: fault 26 (REPEATED_COUNTER): not retried for a non-idempotent command
   (`unknown`, sent once); an idempotent one is resynced and retried."""
import time

from lib import dispatch as dl

V = dl.vin(133)
SIGNED = V + "/signed_command"


def one(c, w, key, cmd, params, fail, events, state, sends, reason_has, error=Ellipsis):
    w.sim.patch_vehicle(V, {"fail": fail})
    m = w.tap.mark()
    i = w.submit(key, cmd, V, params=params)
    c.ok(w.wait_terminal(i, 20), f"{key} terminal", w.states(i))
    time.sleep(0.5)  # longer than the backoff: a resend would show
    w.check_events(c, i, events, what=key)
    w.check_final(c, i, state, reason_has=reason_has, what=key, error=error)
    c.eq(w.tap.count(SIGNED, m), sends, f"{key}: signed requests", w.tap.paths(m))


def body(c, w):
    warm = [w.submit("out-warm", "set_sentry_mode", V, params={"on": True})]
    c.ok(w.wait_terminal(warm, 20), "warm-up terminal", w.states(warm[0]))
    w.check_final(c, warm[0], "succeeded", error=None)
    garble = {"garbled_reply": {"next": 1}}
    one(c, w, "garbled-honk", "honk_horn", None, garble,
        r"queued dispatching sent unknown", "unknown", 1, ("cannot be read", "may have"))
    one(c, w, "garbled-sentry", "set_sentry_mode", {"on": False}, garble,
        r"queued dispatching sent retrying sent succeeded", "succeeded", 2, (), error=None)
    f26 = {"vehicle_fault": {"next": 1, "code": 26}}
    one(c, w, "f26-flash", "flash_lights", None, f26,
        r"queued dispatching sent unknown", "unknown", 1, ("repeated counter", "may have"))
    one(c, w, "f26-sentry", "set_sentry_mode", {"on": True}, f26,
        r"queued dispatching sent retrying sent succeeded", "succeeded", 2, (), error=None)
    # The garbled ones ran (the idempotent one twice: once garbled, once
    # answered); the fault-26 ones ran only when answered without a fault.
    w.check_execs(c, ["set_sentry_mode", "honk_horn", "set_sentry_mode", "set_sentry_mode",
                      "set_sentry_mode"], V)
    st = w.sim.vehicle(V)["vehicle_state"]
    c.eq((st["honk_count"], st["flash_count"]), (1, 0), "honked once, never flashed")
    w.check_seq(c)


dl.run("test_dispatch_outcomes", body, vehicles=[dl.default_vehicle(V)])
