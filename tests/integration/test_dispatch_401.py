"""401: the access token expired.  The daemon refreshes once (one call to
the token endpoint), retries and succeeds; the simulator rotates the
refresh token on every use, so a second expiry only succeeds if the daemon
kept the rotated token, also across a restart.  When the refresh itself
is refused (refresh token revoked), or the fresh token is refused again
(a second 401 after the refresh), the command fails with `auth_error`
after exactly one refresh attempt, never executed."""
from lib import dispatch as dl

V = dl.vin(109)
TOKEN_CALLS = r"POST /oauth2/v3/token$"


def limit(c, w, key, pct):
    i = w.submit(key, "set_charge_limit", V, params={"percent": pct})
    c.ok(w.wait_terminal(i, 20), f"{key} terminal", w.states(i))
    return i


def body(c, w):
    r0 = w.sim.account("acct1")["refresh_token"]
    # 1. expired access token -> refresh -> success.
    w.sim.patch_account("acct1", {"token_expired": True})
    m = w.tap.mark()
    i = limit(c, w, "auth-1", 60)
    w.check_events(c, i, r"queued dispatching( \w+)* sent succeeded")
    w.check_final(c, i, "succeeded", error=None)
    c.eq(w.tap.count(TOKEN_CALLS, m), 1, "one refresh", w.tap.paths(m))
    r1 = w.sim.account("acct1")["refresh_token"]
    c.ok(r1 != r0, "refresh token rotated", r0, r1)
    # 2. expired again: only the rotated refresh token works now.
    w.sim.patch_account("acct1", {"token_expired": True})
    m = w.tap.mark()
    i = limit(c, w, "auth-2", 61)
    w.check_final(c, i, "succeeded", error=None)
    c.eq(w.tap.count(TOKEN_CALLS, m), 1, "one refresh (with the rotated token)", w.tap.paths(m))
    # 3. the same after a restart: the rotated token was stored durably.
    w.restart_daemon(kill9=True)
    w.sim.patch_account("acct1", {"token_expired": True})
    m = w.tap.mark()
    i = limit(c, w, "auth-3", 62)
    w.check_final(c, i, "succeeded", error=None)
    c.eq(w.tap.count(TOKEN_CALLS, m), 1, "one refresh after restart", w.tap.paths(m))
    w.check_execs(c, ["set_charge_limit"] * 3, V)
    # 4. a second 401 after a successful refresh: the simulator expires the
    #    fresh token the moment it was issued (before the daemon gets it)
    #    -> failed with an auth reason, one refresh only, not executed.
    fired = []

    def expire_fresh_token(rec):
        if rec["path"] == "/oauth2/v3/token" and rec["status"] == 200 and not fired:
            fired.append(rec)
            w.sim.patch_account("acct1", {"token_expired": True})

    w.sim.patch_account("acct1", {"token_expired": True})
    w.tap.on_response = expire_fresh_token
    m = w.tap.mark()
    i = limit(c, w, "auth-4", 63)
    w.tap.on_response = None
    c.eq(len(fired), 1, "the refresh happened and its token was expired at once")
    w.check_events(c, i, r"queued dispatching( \w+)* failed")
    ev = w.check_final(c, i, "failed", error="auth_error", http=401)
    c.ok(ev and ev["reason"], "a reason is given", ev)
    c.eq(w.tap.count(TOKEN_CALLS, m), 1, "exactly one refresh for the command", w.tap.paths(m))
    c.eq(w.sim.vehicle(V)["charge_state"]["charge_limit_soc"], 62, "car unchanged")
    # 5. the refresh token is revoked: refresh refused -> failed, not executed.
    w.sim.patch_account("acct1", {"refresh_token": "revoked-by-the-test", "token_expired": True})
    m = w.tap.mark()
    i = limit(c, w, "auth-5", 64)
    w.check_events(c, i, r"queued dispatching( \w+)* failed")
    ev = w.check_final(c, i, "failed", error="auth_error")
    c.ok(ev and ev["reason"], "a reason is given", ev)
    c.eq(w.tap.count(TOKEN_CALLS, m), 1, "exactly one refresh attempt", w.tap.paths(m))
    c.eq(w.sim.vehicle(V)["charge_state"]["charge_limit_soc"], 62, "car unchanged")
    w.check_execs(c, ["set_charge_limit"] * 3, V)
    w.check_seq(c)


dl.run("test_dispatch_401", body, vehicles=[dl.default_vehicle(V)])
