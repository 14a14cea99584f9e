"""Fleet API's "Vehicle Command Protocol required" (issue 12, point 11).

fleetsim's `protocol_required` answers a car's REST calls (`command/{name}`
and `wake_up`) with Fleet API's 403 for cars that take signed commands
only, before anything runs.

* No signed form: `wake_up` is a plain REST call.  The user's own
  `wake_up` fails at once with the reason that says so, sent once, also on
  a car the daemon thought REST-only; the `wake_up` that would wake an
  asleep car for `honk_horn` fails honk_horn the same way ("not sent").
  Nothing runs, the car counts no wake-up.
* A command that has a signed form, sent REST because the car was thought
  REST-only, is signed and sent again ("signing it")."""
import time

from lib import dispatch as dl

V = dl.vin(151)       # modern, awake
SLEEPY = dl.vin(152)  # modern, asleep
OLD = dl.vin(153)     # legacy (REST only)
PR = {"protocol_required": {"next": 1}}
NO_FORM = ("vehicle requires signed commands (Vehicle Command Protocol) and wake_up has no "
           "signed form: not retried")


def settle(c, w, key, i, events, state, what_reason, error=Ellipsis, http=Ellipsis):
    c.ok(w.wait_terminal(i, 20), f"{key} terminal", w.states(i))
    time.sleep(0.5)  # longer than the backoff: a resend would show
    w.check_events(c, i, events, what=key)
    w.check_final(c, i, state, reason_has=what_reason, error=error, http=http, what=key)


def body(c, w):
    # The user's wake_up to a modern car.
    w.sim.patch_vehicle(V, {"fail": PR})
    m = w.tap.mark()
    i = w.submit("pr-wake", "wake_up", V)
    settle(c, w, "pr-wake", i, r"queued dispatching sent failed", "failed",
           (NO_FORM, "the car cannot be sent this command"), error="http_error", http=403)
    c.eq(w.tap.paths(m), [f"POST /api/1/vehicles/{V}/wake_up"], "pr-wake: sent once")
    c.eq(w.sim.vehicle(V)["wake_ups"], 0, "pr-wake: the car counted no wake_up")

    # The wake_up that would wake an asleep car for honk_horn.
    w.sim.patch_vehicle(SLEEPY, {"fail": PR})
    m = w.tap.mark()
    j = w.submit("pr-honk", "honk_horn", SLEEPY)
    settle(c, w, "pr-honk", j, r"queued dispatching waking failed", "failed",
           (NO_FORM, "the car cannot be woken, so honk_horn was not sent"), error="http_error",
           http=403)
    c.eq(w.tap.count(r"/wake_up$", m), 1, "pr-honk: one wake_up", w.tap.paths(m))
    # Its first command: the fleet_status pre-check (paired, signed
    # commands needed) comes first.
    c.eq(w.tap.paths(m), ["POST /api/1/vehicles/fleet_status",
                          f"POST /api/1/vehicles/{SLEEPY}/signed_command",
                          f"POST /api/1/vehicles/{SLEEPY}/wake_up"],
         "pr-honk: fleet_status, the handshake (408), one wake_up")
    st = w.sim.vehicle(SLEEPY)
    c.eq((st["wake_ups"], st["state"], st["vehicle_state"]["honk_count"]), (0, "asleep", 0),
         "pr-honk: the car still asleep, never honked")

    # A legacy car the daemon knows as such (after a first command).
    k = w.submit("pr-old-warm", "door_unlock", OLD)
    c.ok(w.wait_terminal(k, 20), "pr-old-warm terminal", w.states(k))
    w.check_final(c, k, "succeeded", error=None, what="pr-old-warm")
    # Its wake_up: failed at once, no "signing it" round.
    w.sim.patch_vehicle(OLD, {"fail": PR})
    m = w.tap.mark()
    n = w.submit("pr-old-wake", "wake_up", OLD)
    settle(c, w, "pr-old-wake", n, r"queued dispatching sent failed", "failed",
           (NO_FORM,), error="http_error", http=403)
    c.eq(w.tap.paths(m), [f"POST /api/1/vehicles/{OLD}/wake_up"], "pr-old-wake: sent once")
    # Its next command is signed first (the 403 said the car takes signed
    # commands); the car answers 422, and the daemon goes back to REST.
    m = w.tap.mark()
    p = w.submit("pr-old-lock", "door_lock", OLD)
    settle(c, w, "pr-old-lock", p, r"queued dispatching retrying sent succeeded",
           "succeeded", (), error=None, http=200)
    c.eq(w.tap.paths(m), [f"POST /api/1/vehicles/{OLD}/signed_command",
                          f"POST /api/1/vehicles/{OLD}/command/door_lock"],
         "pr-old-lock: signed first (422), then REST")
    # And a REST command to it meeting the 403: signed, 422, REST again.
    w.sim.patch_vehicle(OLD, {"fail": PR})
    m = w.tap.mark()
    q = w.submit("pr-old-unlock", "door_unlock", OLD)
    settle(c, w, "pr-old-unlock", q, r"queued dispatching sent retrying retrying sent succeeded",
           "succeeded", (), error=None, http=200)
    c.eq(w.tap.paths(m), [f"POST /api/1/vehicles/{OLD}/command/door_unlock",
                          f"POST /api/1/vehicles/{OLD}/signed_command",
                          f"POST /api/1/vehicles/{OLD}/command/door_unlock"],
         "pr-old-unlock: REST (403), signed (422), REST")
    r = [e["reason"] for e in w.evs(q) if e["state"] == "retrying"]
    c.eq(r[:1], ["vehicle requires signed commands: signing it"], "pr-old-unlock: first retry",
         r)

    # Only the legacy car's three commands ran, once each.
    w.check_execs(c, [], V)
    w.check_execs(c, [], SLEEPY)
    w.check_execs(c, ["door_unlock", "door_lock", "door_unlock"], OLD)
    w.check_seq(c)


dl.run("test_dispatch_protocol_required", body,
       vehicles=[dl.default_vehicle(V), dl.default_vehicle(SLEEPY, asleep=True),
                 dl.default_vehicle(OLD, legacy=True, locked=True)])
