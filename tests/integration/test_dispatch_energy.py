"""Energy-site commands go to their REST endpoints: backup reserve and
operation mode change on the simulated Powerwall, each executed once,
nothing signed."""
from lib import dispatch as dl

SITE = 4242


def body(c, w):
    c.eq(w.sim.site(SITE)["backup_reserve_percent"], 20, "site starts at 20 %")
    a = w.submit("site-backup", "backup", site=SITE, params={"backup_reserve_percent": 35})
    b = w.submit("site-op", "operation", site=SITE, params={"default_real_mode": "autonomous"})
    c.ok(w.wait_terminal([a, b], 20), "terminal", w.states(a), w.states(b))
    for i in (a, b):
        w.check_events(c, i, r"queued dispatching sent succeeded")
        w.check_final(c, i, "succeeded", error=None, http=200)
    info = w.sim.site(SITE)
    c.eq(info["backup_reserve_percent"], 35, "site_info: backup reserve")
    c.eq(info["default_real_mode"], "autonomous", "site_info: operation mode")
    ex = w.execs(site=SITE)
    c.eq([e["command"] for e in ex], ["backup", "operation"], "each executed once, in order")
    c.eq(w.tap.count(r"POST /api/1/energy_sites/4242/backup$"), 1, "one POST backup",
         w.tap.paths())
    c.eq(w.tap.count(r"POST /api/1/energy_sites/4242/operation$"), 1, "one POST operation",
         w.tap.paths())
    c.eq(w.tap.count("signed_command"), 0, "nothing signed for a site", w.tap.paths())
    w.check_seq(c)


dl.run("test_dispatch_energy", body, sites=[{"id": SITE}])
