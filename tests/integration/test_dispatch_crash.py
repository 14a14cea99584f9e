"""A daemon crash (kill -9) while commands are in flight on slow cars:
after the restart the non-idempotent one (honk_horn) ends `unknown` and is
never re-sent (executed at most once), the idempotent one
(set_charge_limit) completes and the car reaches the value; event seqs
stay gap-free across the restart."""
import time

from lib import dispatch as dl
from lib import vcp_client as vc

A, B = dl.vin(122), dl.vin(123)


def body(c, w):
    wa = w.submit("cr-warm-a", "set_sentry_mode", A, params={"on": True})
    wb = w.submit("cr-warm-b", "set_sentry_mode", B, params={"on": True})
    c.ok(w.wait_terminal([wa, wb], 20), "warm-up terminal")
    for v in (A, B):
        w.sim.patch_vehicle(v, {"latency": {"fixed_ms": 2500, "jitter_ms": 0}})
    m = w.tap.mark()
    h = w.submit("cr-honk", "honk_horn", A)
    s = w.submit("cr-limit", "set_charge_limit", B, params={"percent": 73})
    c.ok(w.wait_state([h, s], {"sent"}, 10), "both sent", w.states(h), w.states(s))
    time.sleep(0.3)
    w.restart_daemon(kill9=True)
    c.ok(w.wait_terminal([h, s], 40), "terminal after restart", w.states(h), w.states(s))
    w.check_events(c, h, r"queued dispatching sent unknown")
    w.check_final(c, h, "unknown", reason_has=("may have",))
    # Its end is one log line of the restarted daemon, with the fields.
    with open(w.daemon.logpath) as f:
        ends = [ln for ln in f if f"command {h} unknown" in ln]
    c.ok(len(ends) == 1 and f"id={h} " in ends[0] and "state=unknown" in ends[0]
         and "command=honk_horn" in ends[0], "the unknown end is logged once", ends)
    w.check_events(c, s, r"queued dispatching sent .*succeeded")
    w.check_final(c, s, "succeeded", error=None)
    time.sleep(3.0)  # a resend of the honk would have reached the car by now
    c.eq(w.tap.count(A + "/signed_command", m), 1, "honk sent exactly once", w.tap.paths(m))
    ha = [e["command"] for e in w.execs(A)]
    c.ok(ha in (["set_sentry_mode"], ["set_sentry_mode", "honk_horn"]),
         "honk executed at most once", ha)
    c.ok(w.sim.vehicle(A)["vehicle_state"]["honk_count"] <= 1, "honk_count <= 1")
    eb = w.execs(B)[1:]
    want = vc.set_charge_limit(73)[1].hex()
    c.ok(1 <= len(eb) <= 3 and all(e["command"] == "set_charge_limit" and e["payload"] == want
                                   for e in eb), "limit executed, only the set-point", eb)
    c.eq(w.sim.vehicle(B)["charge_state"]["charge_limit_soc"], 73, "car B at the set-point")
    w.check_seq(c)


dl.run("test_dispatch_crash", body, vehicles=[dl.default_vehicle(A), dl.default_vehicle(B)],
       daemon_opts={"--http-timeout-ms": 6000})
