"""A missing OAuth scope fails the command before any request: the reason
names the scope and the re-consent link with the app's client id; the
simulator sees no request for it.  A command the token's scopes do allow
still goes through (the check is per command, from the JWT `scp`)."""
from lib import dispatch as dl

V = dl.vin(103)
SITE = 77
SCOPES = ["openid", "offline_access", "vehicle_device_data", "vehicle_charging_cmds"]


def body(c, w):
    a = w.submit("scope-lock", "door_lock", V)
    b = w.submit("scope-site", "backup", site=SITE, params={"backup_reserve_percent": 50})
    c.ok(w.wait_terminal([a, b], 20), "terminal", w.states(a), w.states(b))
    for i, scope in ((a, "vehicle_cmds"), (b, "energy_cmds")):
        w.check_events(c, i, r"queued (dispatching )?failed")
        w.check_final(c, i, "failed", error="missing_scope", http=None,
                      reason_has=(f"missing OAuth scope {scope}", dl.CONSENT_LINK))
    c.eq(w.tap.count(V), 0, "no request for the car", w.tap.paths())
    c.eq(w.tap.count("energy_sites"), 0, "no request for the site", w.tap.paths())
    c.eq(w.execs(V), [], "car never executed anything")
    c.eq(w.execs(site=SITE), [], "site never executed anything")
    # vehicle_charging_cmds allows set_charge_limit.
    d = w.submit("scope-charge", "set_charge_limit", V, params={"percent": 70})
    c.ok(w.wait_terminal(d, 20), "allowed command terminal", w.states(d))
    w.check_final(c, d, "succeeded", error=None)
    w.check_execs(c, ["set_charge_limit"], V)
    w.check_seq(c)


dl.run("test_dispatch_scope", body, vehicles=[dl.default_vehicle(V)], sites=[{"id": SITE}],
       accounts=[{"id": "acct1", "scopes": SCOPES, "vins": [V], "sites": [SITE]}])
