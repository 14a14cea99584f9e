"""An access token that is not a JWT has unknown scopes: fleetqd sends the
command and Fleet API's 403 decides (docs/accounts.md).  The refused
command fails with the same missing-scope reason as the local check, after
one request; a command the token does allow succeeds."""
from lib import dispatch as dl

V = dl.vin(104)
SCOPES = ["openid", "offline_access", "vehicle_device_data", "vehicle_charging_cmds"]


def body(c, w):
    a = w.submit("opaque-lock", "door_lock", V)
    c.ok(w.wait_terminal(a, 20), "terminal", w.states(a))
    w.check_events(c, a, r"queued dispatching sent failed")
    w.check_final(c, a, "failed", error="missing_scope", http=403,
                  reason_has=("missing OAuth scope vehicle_cmds", dl.CONSENT_LINK))
    c.ok(w.tap.count(V) >= 1, "the command was sent to Fleet API", w.tap.paths())
    c.eq(w.execs(V), [], "car never executed anything")
    d = w.submit("opaque-charge", "set_charge_limit", V, params={"percent": 70})
    c.ok(w.wait_terminal(d, 20), "allowed command terminal", w.states(d))
    w.check_final(c, d, "succeeded", error=None)
    w.check_execs(c, ["set_charge_limit"], V)
    w.check_seq(c)


dl.run("test_dispatch_scope_opaque", body, vehicles=[dl.default_vehicle(V)],
       accounts=[{"id": "acct1", "scopes": SCOPES, "vins": [V], "opaque": True}])
