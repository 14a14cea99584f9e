"""Account-wide refusals are remembered per account.  412 (the app's
partner account is not registered in the region: fleetsim's account key
`registered: false`) fails the command with a reason naming POST
/api/1/partner_accounts and the account's Fleet API host; the account's
next command, on its other car, fails at once without a request;
`fleetq account get` shows the refusal; after registering (the simulator's
account patched) `fleetq account retry --account A` clears it and the next
command succeeds.  Same for 451 (cleared by retry) and 401
mobile_access_disabled (cleared by `fleetq account add` again), each with
its own error code."""
from lib import dispatch as dl

V1, V2 = dl.vin(160), dl.vin(161)   # acct1: not registered
V3, V4 = dl.vin(162), dl.vin(163)   # acct2: 451
V5, V6 = dl.vin(164), dl.vin(165)   # acct3: mobile access disabled


def refused(c, w, acct, v_first, v_second, key, error, http, says):
    a = w.submit(f"{key}-a", "set_charge_limit", v_first, params={"percent": 70}, account=acct)
    c.ok(w.wait_terminal(a, 20), f"{key}: first terminal", w.states(a))
    w.check_events(c, a, r"queued dispatching( sent)? failed", what=f"{key} first")
    w.check_final(c, a, "failed", error=error, http=http, what=f"{key} first",
                  reason_has=says + (f"fleetq account retry --account {acct}", w.base_url))
    mark = w.tap.mark()
    b = w.submit(f"{key}-b", "set_charge_limit", v_second, params={"percent": 71}, account=acct)
    c.ok(w.wait_terminal(b, 20), f"{key}: second terminal", w.states(b))
    w.check_events(c, b, r"queued failed", what=f"{key} second")
    w.check_final(c, b, "failed", error=error, what=f"{key} second",
                  reason_prefix=f"not sent: Fleet API refused account {acct} earlier",
                  reason_has=says)
    c.eq(w.tap.paths(mark), [], f"{key}: no request for the second command")
    c.eq(w.execs(v_first) + w.execs(v_second), [], f"{key}: nothing executed")
    r = dl.cli("account", "get", "--endpoint", w.daemon.endpoint, "--account", acct)
    c.ok(r.returncode == 0 and "refused" in r.stdout and error in r.stdout,
         f"{key}: account get shows the refusal", r.stdout, r.stderr)
    return b


def succeeds(c, w, acct, v, key):
    x = w.submit(key, "set_charge_limit", v, params={"percent": 72}, account=acct)
    c.ok(w.wait_terminal(x, 20), f"{key}: terminal", w.states(x))
    w.check_events(c, x, r"queued dispatching( \w+)* sent succeeded", what=key)
    w.check_final(c, x, "succeeded", error=None, what=key)
    w.check_execs(c, ["set_charge_limit"], v, what=key)


def body(c, w):
    refused(c, w, "acct1", V1, V2, "r412", "not_registered", 412,
            ("HTTP 412", "POST /api/1/partner_accounts"))
    w.sim.patch_account("acct1", {"registered": True})
    r = dl.cli("account", "retry", "--endpoint", w.daemon.endpoint, "--account", "acct1")
    c.ok(r.returncode == 0 and "cleared" in r.stdout, "account retry clears it", r.stdout,
         r.stderr)
    succeeds(c, w, "acct1", V2, "r412-after")

    w.sim.patch_account("acct2", {"fail": {"http_451": {"prob": 1}}})
    refused(c, w, "acct2", V3, V4, "r451", "unavailable_for_legal_reasons", 451, ("HTTP 451",))
    w.sim.patch_account("acct2", {"fail": {"http_451": None}})
    r = dl.cli("account", "retry", "--endpoint", w.daemon.endpoint, "--account", "acct2")
    c.eq(r.returncode, 0, "account retry acct2", r.stdout, r.stderr)
    succeeds(c, w, "acct2", V4, "r451-after")

    w.sim.patch_account("acct3", {"fail": {"mobile_access_disabled": {"prob": 1}}})
    refused(c, w, "acct3", V5, V6, "rmob", "mobile_access_disabled", 401,
            ("mobile_access_disabled", "Allow Mobile Access"))
    w.sim.patch_account("acct3", {"fail": {"mobile_access_disabled": None}})
    w.add_account(w.accounts[2])  # adding the account again clears it too
    succeeds(c, w, "acct3", V6, "rmob-after")

    r = dl.cli("account", "retry", "--endpoint", w.daemon.endpoint, "--account", "nobody")
    c.ok(r.returncode == 1 and "not_found" in r.stderr, "retry of an unknown account", r.stderr)
    w.check_seq(c)


dl.run("test_dispatch_account_refused", body,
       vehicles=[dl.default_vehicle(v, legacy=True) for v in (V1, V2, V3, V4, V5, V6)],
       accounts=[{"id": "acct1", "vins": [V1, V2], "registered": False},
                 {"id": "acct2", "vins": [V3, V4]},
                 {"id": "acct3", "vins": [V5, V6]}])
