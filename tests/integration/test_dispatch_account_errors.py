"""Account problems at dispatch: a command naming an account fleetqd does
not know waits for it (no request) and expires at its deadline with a
reason naming the account and `fleetq account add`, or goes ahead when the
account is added in time; a car that is not on the account (Fleet API
answers 404) fails with the HTTP status and a reason, never executed; a
command for an account removed with `fleetq account remove` is treated
like an unknown account.  `fleetq account list` shows the account and
never its token."""
from lib import dispatch as dl

V = dl.vin(136)        # on acct1
FOREIGN = dl.vin(137)  # only on acct2, which fleetq never hears of
GONE = dl.vin(138)     # on acct3, removed from fleetq before the command
LATE = dl.vin(139)     # on acct4, added to fleetq after the command was queued


def body(c, w):
    # An account fleetqd does not know (yet): the command waits for it until
    # its deadline, then expires saying which account to add.
    a = w.submit("ae-noacct", "set_charge_limit", V, params={"percent": 66},
                 account="never-added", ttl_ms=1500)
    c.ok(w.wait_terminal(a, 20), "unknown account: terminal", w.states(a))
    w.check_events(c, a, r"queued expired", what="unknown account")
    w.check_final(c, a, "expired", error="expired", http=None, what="unknown account",
                  reason_has=('"never-added"', "fleetq account add"))
    c.eq(w.tap.count(V), 0, "no request for it", w.tap.paths())
    # ... and goes ahead once the account is added before the deadline.
    late = w.submit("ae-late", "set_charge_limit", LATE, params={"percent": 59},
                    account="acct4", ttl_ms=20000)
    c.ok(not w.wait_terminal(late, 1.0), "waits for its account", w.states(late))
    w.add_account(w.accounts[3])
    c.ok(w.wait_terminal(late, 20), "late account: terminal", w.states(late))
    w.check_final(c, late, "succeeded", error=None, what="late account")
    w.check_execs(c, ["set_charge_limit"], LATE)
    b = w.submit("ae-foreign", "set_charge_limit", FOREIGN, params={"percent": 67})
    c.ok(w.wait_terminal(b, 20), "foreign car: terminal", w.states(b))
    w.check_events(c, b, r"queued dispatching( \w+)* failed", what="foreign car")
    ev = w.check_final(c, b, "failed", error="http_error", http=404, what="foreign car")
    c.ok(ev and ev["reason"], "a reason is given", ev)
    c.eq(w.execs(FOREIGN), [], "foreign car never executed anything")
    c.eq(w.execs(V), [], "own car untouched")
    r = dl.cli("account", "remove", "--endpoint", w.daemon.endpoint, "--account", "acct3")
    c.eq(r.returncode, 0, "account remove", r.stdout, r.stderr)
    g = w.submit("ae-removed", "set_charge_limit", GONE, params={"percent": 68},
                 account="acct3", ttl_ms=1500)
    c.ok(w.wait_terminal(g, 20), "removed account: terminal", w.states(g))
    w.check_events(c, g, r"queued expired", what="removed account")
    w.check_final(c, g, "expired", error="expired", http=None, what="removed account",
                  reason_has=('"acct3"', "fleetq account add"))
    c.eq(w.tap.count(GONE), 0, "no request for the removed account's car", w.tap.paths())
    r = dl.cli("account", "list", "--endpoint", w.daemon.endpoint)
    c.eq(r.returncode, 0, "account list", r.stdout, r.stderr)
    c.ok("acct1" in r.stdout and "never-added" not in r.stdout and "acct3" not in r.stdout,
         "list shows acct1 only", r.stdout)
    c.ok(w.accounts[0]["token"] not in r.stdout + r.stderr, "list never shows the token")
    w.check_seq(c)


dl.run("test_dispatch_account_errors", body,
       vehicles=[dl.default_vehicle(v) for v in (V, FOREIGN, GONE, LATE)],
       accounts=[{"id": "acct1", "vins": [V]},
                 {"id": "acct2", "vins": [FOREIGN], "fleetq": False},
                 {"id": "acct3", "vins": [GONE]},
                 {"id": "acct4", "vins": [LATE], "fleetq": False}])
