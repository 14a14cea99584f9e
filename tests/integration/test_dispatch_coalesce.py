"""Coalescing: while the car sleeps, a newer set_charge_limit with
coalesce=true supersedes an older one still queued (which ends
`superseded`, never sent); the one already waking is not touched; a
different command name is not touched either.  The car ends at the newest
value; the execution log holds exactly the survivors."""
from lib import dispatch as dl
from lib import vcp_client as vc

V = dl.vin(118)


def body(c, w):
    a = w.submit("co-1", "set_charge_limit", V, params={"percent": 60})
    c.ok(w.wait_state(a, {"waking"}, 10), "first one is waking", w.states(a))
    b = w.submit("co-2", "set_charge_limit", V, params={"percent": 70}, coalesce=True)
    x = w.submit("co-amps", "set_charging_amps", V, params={"charging_amps": 11})
    d = w.submit("co-3", "set_charge_limit", V, params={"percent": 80}, coalesce=True)
    c.ok(w.wait_terminal([a, b, x, d], 20), "terminal",
         *[w.states(i) for i in (a, b, x, d)])
    w.check_events(c, b, r"queued superseded")
    w.check_final(c, b, "superseded", http=None)
    for i in (a, x, d):
        w.check_events(c, i, r"queued .*sent succeeded")
        w.check_final(c, i, "succeeded", error=None)
    ex = w.execs(V)
    c.eq([(e["command"], e["payload"]) for e in ex],
         [("set_charge_limit", vc.set_charge_limit(60)[1].hex()),
          ("set_charging_amps", vc.set_charging_amps(11)[1].hex()),
          ("set_charge_limit", vc.set_charge_limit(80)[1].hex())],
         "executed: 60, the amps, 80 (70 never)")
    c.eq(w.sim.vehicle(V)["charge_state"]["charge_limit_soc"], 80, "car ends at the newest")
    w.check_seq(c)


dl.run("test_dispatch_coalesce", body,
       vehicles=[dl.default_vehicle(V, asleep=True, wake_ms=2000)],
       # Polls that find the car asleep send another wake_up (at most
       # --wake-max, 3): poll slowly enough for the car to wake in time.
       daemon_opts={"--wake-poll-ms": 1500})
