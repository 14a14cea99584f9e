"""A plaintext reply is not the car's word (issue 12, with points 8 and 10).

Every signed command asks for an encrypted response (FLAG_ENCRYPT_RESPONSE).
fleetsim's `plaintext_reply` runs the command and answers it in clear: a
200 whose RoutableMessage has no AES-GCM response data and no fault, which
anything between fleetqd and the car could have written.  It must not count
as success:

* a non-idempotent command (honk_horn, INFOTAINMENT; actuate_trunk, VCSEC)
  ends `unknown` ("may have been executed"), sent once;
* an idempotent one (set_sentry_mode, door_lock) is sent again and
  succeeds on the genuine, encrypted answer;
* the session survives: no new handshake, and the counters the car saw
  only go up."""
import time

from lib import dispatch as dl

V = dl.vin(141)
SIGNED = V + "/signed_command"
PLAIN = {"plaintext_reply": {"next": 1}}


def one(c, w, key, cmd, params, events, state, sends, reason_has, error=Ellipsis):
    w.sim.patch_vehicle(V, {"fail": PLAIN})
    m = w.tap.mark()
    i = w.submit(key, cmd, V, params=params)
    c.ok(w.wait_terminal(i, 20), f"{key} terminal", w.states(i))
    time.sleep(0.5)  # longer than the backoff: a resend would show
    w.check_events(c, i, events, what=key)
    w.check_final(c, i, state, reason_has=reason_has, what=key, error=error)
    c.eq(w.tap.count(SIGNED, m), sends, f"{key}: signed requests", w.tap.paths(m))


def body(c, w):
    # Sessions in both domains first, so the plaintext answers below are the
    # only thing that differs.
    warm = [w.submit("pt-warm-info", "set_sentry_mode", V, params={"on": True}),
            w.submit("pt-warm-vcsec", "door_unlock", V)]
    c.ok(w.wait_terminal(warm, 20), "warm-up terminal", [w.states(i) for i in warm])
    for i in warm:
        w.check_final(c, i, "succeeded", error=None, what="warm-up")
    s0 = w.sim.stats()
    unk = ("plaintext reply", "not authenticated", "may have been executed")
    one(c, w, "pt-honk", "honk_horn", None,
        r"queued dispatching sent unknown", "unknown", 1, unk)
    one(c, w, "pt-trunk", "actuate_trunk", {"which_trunk": "rear"},
        r"queued dispatching sent unknown", "unknown", 1, unk)
    one(c, w, "pt-sentry", "set_sentry_mode", {"on": False},
        r"queued dispatching sent retrying sent succeeded", "succeeded", 2, (), error=None)
    one(c, w, "pt-lock", "door_lock", None,
        r"queued dispatching sent retrying sent succeeded", "succeeded", 2, (), error=None)
    # The retry of an idempotent command says why it was sent again.
    for key in ("pt-sentry", "pt-lock"):
        evs = w.evs(w.ids[key])
        r = next((e["reason"] for e in evs if e["state"] == "retrying"), "")
        c.ok("plaintext reply" in r and "safe to send again" in r,
             f"{key}: retrying reason", r)

    # The car ran every command it answered, plaintext or not: the unknown
    # ones once, the idempotent ones twice (once answered in clear).
    w.check_execs(c, ["set_sentry_mode", "door_unlock", "honk_horn", "actuate_trunk",
                      "set_sentry_mode", "set_sentry_mode", "door_lock", "door_lock"], V)
    st = w.sim.vehicle(V)
    c.eq((st["vehicle_state"]["honk_count"], st["vehicle_state"]["locked"],
          st["vehicle_state"]["sentry_mode"]), (1, True, False), "car state")
    s1 = w.sim.stats()
    c.eq(s1["handshakes"] - s0["handshakes"], 0, "the sessions were kept (no handshake)", s0, s1)
    c.eq(s1["signed_fault"] - s0["signed_fault"], 0, "no faulted attempt", s0, s1)
    for dom in (2, 3):
        ctr = [e["counter"] for e in w.execs(V) if e["domain"] == dom]
        c.eq(ctr, sorted(set(ctr)), f"domain {dom}: counters only go up", ctr)
    w.check_seq(c)


dl.run("test_dispatch_plaintext_reply", body,
       vehicles=[dl.default_vehicle(V, locked=False)])
