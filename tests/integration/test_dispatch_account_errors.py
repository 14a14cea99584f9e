"""Account problems (issue 13, defect 4): a submit naming an account
fleetqd does not have is refused at once with `unknown_account` (the
message names the account and `fleetq account add`), stores nothing, sends
nothing, and holds nothing: the same car's next command, another tenant's
through a registered account, succeeds at once (before, the refused one
waited in the car's queue until its deadline and the car with it).  An
account added a moment ago is usable by the very next submit (same key);
one removed with `fleetq account remove` is unknown again.  A car that is
not on the account (Fleet API answers 404) fails with the HTTP status and
a reason, never executed.  `fleetq account list` shows the accounts and
never a token."""
import time

from lib import dispatch as dl

V = dl.vin(136)        # on acct1
FOREIGN = dl.vin(137)  # only on acct2, which fleetq never hears of
GONE = dl.vin(138)     # on acct3, removed from fleetq before the command
LATE = dl.vin(139)     # on acct4, added to fleetq after a first refusal


def refused(c, w, key, vin, account, what):
    m = {"op": "submit", "tenant": dl.TENANT, "key": key, "account": account, "vin": vin,
         "command": "set_charge_limit", "params": {"percent": 66}, "ttl_ms": 60000,
         "req": key}
    t0 = time.monotonic()
    r = w.client.call(m)
    took = time.monotonic() - t0
    c.eq((r.get("ok"), r.get("error"), r.get("req")), (False, "unknown_account", key),
         f"{what}: refused with unknown_account", r)
    msg = r.get("message", "")
    c.ok(f'"{account}"' in msg and "fleetq account add" in msg and "nothing was stored" in msg,
         f"{what}: the message names the account and what to do", msg)
    c.ok(took < 2.0, f"{what}: refused at once ({took:.3f} s)")
    g = w.client.get(tenant=dl.TENANT, key=key)
    c.eq(g.get("error"), "not_found", f"{what}: nothing stored", g)
    return r


def body(c, w):
    # An account fleetqd does not know: refused at once; the car is not
    # held, so another tenant's command for it through acct1 goes now.
    m0 = w.tap.mark()
    refused(c, w, "ae-noacct", V, "never-added", "unknown account")
    t0 = time.monotonic()
    r = w.client.call({"op": "submit", "tenant": "other-tenant", "key": "ae-next",
                       "account": "acct1", "vin": V, "command": "set_charge_limit",
                       "params": {"percent": 71}})
    c.ok(r.get("ok"), "the car's next command is accepted", r)
    nxt = r.get("id")
    w.events.setdefault(nxt, [])
    c.ok(w.wait_terminal(nxt, 10), "the car's next command is not held", w.states(nxt))
    c.ok(time.monotonic() - t0 < 10, "and done within seconds")
    w.check_final(c, nxt, "succeeded", error=None, what="next command")
    w.check_execs(c, ["set_charge_limit"], V)
    c.eq(w.sim.vehicle(V)["charge_state"]["charge_limit_soc"], 71, "the car got 71, never 66")
    c.eq(w.tap.count(V + "/signed_command", m0), 2, "one handshake and the one command",
         w.tap.paths(m0))

    # Added a moment ago: the very next submit (the same key) is taken.
    refused(c, w, "ae-late", LATE, "acct4", "not yet added")
    w.add_account(w.accounts[3])
    late = w.submit("ae-late", "set_charge_limit", LATE, params={"percent": 59},
                    account="acct4", ttl_ms=20000)
    c.ok(w.wait_terminal(late, 20), "late account: terminal", w.states(late))
    w.check_final(c, late, "succeeded", error=None, what="late account")
    w.check_execs(c, ["set_charge_limit"], LATE)

    b = w.submit("ae-foreign", "set_charge_limit", FOREIGN, params={"percent": 67})
    c.ok(w.wait_terminal(b, 20), "foreign car: terminal", w.states(b))
    w.check_events(c, b, r"queued dispatching( \w+)* failed", what="foreign car")
    ev = w.check_final(c, b, "failed", error="http_error", http=404, what="foreign car")
    c.ok(ev and ev["reason"], "a reason is given", ev)
    c.eq(w.execs(FOREIGN), [], "foreign car never executed anything")

    # Removed: unknown again, at once.
    r = dl.cli("account", "remove", "--endpoint", w.daemon.endpoint, "--account", "acct3")
    c.eq(r.returncode, 0, "account remove", r.stdout, r.stderr)
    refused(c, w, "ae-removed", GONE, "acct3", "removed account")
    c.eq(w.tap.count(GONE), 0, "no request for the removed account's car", w.tap.paths())

    r = dl.cli("account", "list", "--endpoint", w.daemon.endpoint)
    c.eq(r.returncode, 0, "account list", r.stdout, r.stderr)
    c.ok("acct1" in r.stdout and "acct4" in r.stdout and "never-added" not in r.stdout
         and "acct3" not in r.stdout, "list shows acct1 and acct4", r.stdout)
    c.ok(all(a["token"] not in r.stdout + r.stderr for a in w.accounts),
         "list never shows a token")
    w.check_seq(c)


dl.run("test_dispatch_account_errors", body,
       vehicles=[dl.default_vehicle(v) for v in (V, FOREIGN, GONE, LATE)],
       accounts=[{"id": "acct1", "vins": [V]},
                 {"id": "acct2", "vins": [FOREIGN], "fleetq": False},
                 {"id": "acct3", "vins": [GONE]},
                 {"id": "acct4", "vins": [LATE], "fleetq": False}])
