"""421 wrong region (over HTTPS with a throwaway CA): the account's first
host (an "na" simulator) answers 421 naming the "eu" simulator; the daemon
switches the account's base URL (that host is allowed with --allow-host),
the command executes once on the eu side and never on the na side.  The
switch is persisted: after a restart the next command goes straight to the
new host (the na simulator sees no request at all)."""
import copy

from lib import dispatch as dl
from lib import fqlib

V = dl.vin(132)
P2 = fqlib.free_port()
EU = f"https://127.0.0.1:{P2}"


def body(c, w):
    cfg2 = copy.deepcopy(w.sim.config)
    cfg2["region"] = "eu"
    for a in cfg2["accounts"]:
        a.pop("base_url", None)
    eu = dl.Sim(cfg2, dir=w.tmp, tls=w.tls, port=P2, name="fleetsim-eu")
    eu.start()
    w.start()
    try:
        a = w.submit("rg-1", "set_charge_limit", V, params={"percent": 62})
        c.ok(w.wait_terminal(a, 20), "first terminal", w.states(a))
        w.check_events(c, a, r"queued dispatching( \w+)* sent succeeded")
        w.check_final(c, a, "succeeded", error=None, http=200)
        c.eq(w.execs(V), [], "never executed by the na simulator")
        c.eq([e["command"] for e in eu.executions(vin=V)], ["set_charge_limit"],
             "executed once by the eu simulator")
        c.eq(eu.vehicle(V)["charge_state"]["charge_limit_soc"], 62, "eu car state")
        w.restart_daemon(kill9=False)
        n0 = w.sim.daemon_requests()
        b = w.submit("rg-2", "set_charge_limit", V, params={"percent": 63})
        c.ok(w.wait_terminal(b, 20), "second terminal", w.states(b))
        w.check_events(c, b, r"queued dispatching sent succeeded")
        w.check_final(c, b, "succeeded", error=None, http=200)
        c.eq(w.sim.daemon_requests() - n0, 0, "after restart: nothing sent to the old host")
        c.eq([e["command"] for e in eu.executions(vin=V)], ["set_charge_limit"] * 2,
             "second executed once by the eu simulator")
        c.eq(eu.vehicle(V)["charge_state"]["charge_limit_soc"], 63, "eu car state")
        w.check_seq(c)
    finally:
        c.eq(eu.stop(), 0, "eu fleetsim exits 0")


dl.run("test_dispatch_region", body, tls=True, start=False,
       vehicles=[dl.default_vehicle(V)],
       accounts=[{"id": "acct1", "vins": [V], "region": "eu", "base_url": EU}],
       daemon_opts={"--allow-host": f"127.0.0.1:{P2}"})
