"""Execute-then-drop on an idempotent set-point (set_charge_limit): the
reply is lost after execution, the daemon may retry within the deadline
and the command succeeds; every extra execution is the same set-point (no
other command executed), and the car ends at the requested value."""
from lib import dispatch as dl
from lib import vcp_client as vc

V = dl.vin(112)


def body(c, w):
    warm = w.submit("idem-warm", "set_sentry_mode", V, params={"on": True})
    c.ok(w.wait_terminal(warm, 20), "warm-up terminal", w.states(warm))
    w.sim.patch_vehicle(V, {"fail": {"drop_reply": {"next": 1, "status": 500}}})
    i = w.submit("idem-1", "set_charge_limit", V, params={"percent": 77})
    c.ok(w.wait_terminal(i, 20), "terminal", w.states(i))
    w.check_events(c, i, r"queued dispatching sent (retrying |dispatching )+(\w+ )*sent succeeded")
    w.check_final(c, i, "succeeded", error=None, http=200)
    ex = w.execs(V)[1:]
    want = vc.set_charge_limit(77)[1].hex()
    c.ok(1 <= len(ex) <= 3, "executed at least once, at most a few times", ex)
    c.ok(all(e["command"] == "set_charge_limit" and e["payload"] == want for e in ex),
         "extra executions are the same set-point only", ex, want)
    c.eq(w.sim.vehicle(V)["charge_state"]["charge_limit_soc"], 77, "car at the set-point")
    w.check_seq(c)


dl.run("test_dispatch_idempotent_retry", body, vehicles=[dl.default_vehicle(V)])
