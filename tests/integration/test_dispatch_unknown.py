"""Execute-then-drop on non-idempotent commands: the car executes the
command, the reply is lost (500, or the connection closed without an
answer, or 504).  The command ends `unknown` ("may have been executed"), was
executed exactly once and is never re-sent."""
import time

from lib import dispatch as dl

V = dl.vin(111)


def body(c, w):
    # Sessions in both domains first, so each case below is one request.
    warm = [w.submit("unk-warm", "set_sentry_mode", V, params={"on": True}),
            w.submit("unk-warm-vcsec", "door_unlock", V)]
    c.ok(w.wait_terminal(warm, 20), "warm-up terminal", *[w.states(i) for i in warm])
    for i in warm:
        w.check_final(c, i, "succeeded", error=None)
    cases = [("unk-honk", "honk_horn", None, 500, 500),
             ("unk-flash", "flash_lights", None, 0, None),
             ("unk-trunk", "actuate_trunk", {"which_trunk": "rear"}, 504, 504)]
    for key, cmd, params, status, http in cases:
        w.sim.patch_vehicle(V, {"fail": {"drop_reply": {"next": 1, "status": status}}})
        m = w.tap.mark()
        i = w.submit(key, cmd, V, params=params)
        c.ok(w.wait_terminal(i, 20), f"{key} terminal", w.states(i))
        time.sleep(1.0)  # longer than the backoff: a resend would show
        w.check_events(c, i, r"queued dispatching sent unknown", what=key)
        w.check_final(c, i, "unknown", reason_has=("may have",), what=key,
                      http=http if http else Ellipsis)
        c.eq(w.tap.count(V + "/signed_command", m), 1, f"{key}: sent exactly once",
             w.tap.paths(m))
    w.check_execs(c, ["set_sentry_mode", "door_unlock", "honk_horn", "flash_lights",
                      "actuate_trunk"], V)
    st = w.sim.vehicle(V)["vehicle_state"]
    c.eq((st["honk_count"], st["flash_count"], st["rt"]), (1, 1, True),
         "honked and flashed once, trunk toggled once (open)")
    w.check_seq(c)


dl.run("test_dispatch_unknown", body, vehicles=[dl.default_vehicle(V)])
