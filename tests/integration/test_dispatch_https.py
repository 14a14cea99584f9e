"""Dispatch over HTTPS: fleetsim with a certificate from a throwaway CA
(openssl CLI), fleetqd trusting it through --ca-file; a signed
INFOTAINMENT command, a VCSEC command and an energy-site command all
succeed, executed once each.  A second daemon *without* --ca-file must not
get through (TLS verification is always on): its command never succeeds
and the simulator executes nothing for it."""
from lib import dispatch as dl
from lib import fqlib

V = dl.vin(133)
SITE = 31


def body(c, w):
    a = w.submit("tls-limit", "set_charge_limit", V, params={"percent": 67})
    b = w.submit("tls-lock", "door_lock", V)
    s = w.submit("tls-site", "backup", site=SITE, params={"backup_reserve_percent": 44})
    c.ok(w.wait_terminal([a, b, s], 20), "terminal", w.states(a), w.states(b), w.states(s))
    for i in (a, b, s):
        w.check_events(c, i, r"queued dispatching sent succeeded")
        w.check_final(c, i, "succeeded", error=None, http=200)
    w.check_execs(c, ["set_charge_limit", "door_lock"], V)
    w.check_execs(c, ["backup"], site=SITE)
    st = w.sim.vehicle(V)
    c.eq((st["charge_state"]["charge_limit_soc"], st["vehicle_state"]["locked"]), (67, True),
         "car state")
    c.eq(w.sim.site(SITE)["backup_reserve_percent"], 44, "site state")
    w.check_seq(c)

    # No --ca-file: the simulator's certificate is not trusted.
    extra = [x for x in w.daemon.extra]
    k = extra.index("--ca-file")
    del extra[k:k + 2]
    d2 = fqlib.Daemon(shards=1, extra=extra, name="fleetqd-untrusting").start()
    dl.add_account(d2.endpoint, "acct1", w.accounts[0]["token"], "unused-r", w.base_url)
    cl = fqlib.Client(d2.endpoint)
    rep = cl.call({"op": "submit", "tenant": dl.TENANT, "key": "tls-untrusted",
                   "account": "acct1", "vin": V, "command": "set_charge_limit",
                   "params": {"percent": 90}, "ttl_ms": 3000})
    c.ok(rep.get("ok"), "accepted", rep)
    final = fqlib.wait_for(lambda: cl.get(rep["id"])["command"]["state"] in fqlib.TERMINAL
                           and cl.get(rep["id"])["command"], timeout=20)
    c.ok(final, "untrusted: terminal", cl.get(rep["id"]))
    if final:
        dl.log(f"untrusted daemon: {final['state']} ({final.get('error')}): {final.get('reason')}")
        c.ok(final["state"] in ("failed", "expired"), "untrusted: never succeeds",
             final["state"], final.get("reason"))
        c.ok("not trusted" in final.get("reason", "") and "--ca-file" in final.get("reason", ""),
             "untrusted: the reason says so and names --ca-file", final.get("reason"))
    c.eq(w.sim.vehicle(V)["charge_state"]["charge_limit_soc"], 67, "car unchanged")
    w.check_execs(c, ["set_charge_limit", "door_lock"], V)
    cl.close()
    c.eq(d2.term(), 0, "second daemon exits 0")

    # A certificate from the CA the daemon trusts (--ca-file), but issued
    # for another name than the host the base URL names (issue 13, 8): a
    # host-name mismatch, reported as such, not as an untrusted CA.
    crt, key, ca = dl.make_tls(w.tmp, names="DNS:localhost", stem="other", reuse_ca=True)
    other = dl.Sim(dict(w.sim.config), dir=w.tmp, tls=(crt, key, ca), port=dl.free_port(),
                   name="fleetsim-other-name").start()
    a2 = dict(w.accounts[0], id="acct-other")
    w.add_account(a2, base_url=other.base)  # https://127.0.0.1:port; the cert says localhost
    m = w.submit("tls-mismatch", "set_charge_limit", V, params={"percent": 91},
                 account="acct-other", ttl_ms=5000)
    c.ok(w.wait_terminal(m, 20), "name mismatch: terminal", w.states(m))
    ev = w.check_final(c, m, "failed", error="http_error", what="name mismatch",
                       reason_has=("not issued for the host", "no alternative certificate subject"
                                   " name matches", "nothing was sent"))
    c.ok(ev and "not trusted" not in ev["reason"] and "give its CA" not in ev["reason"],
         "name mismatch: not reported as an untrusted CA", ev and ev["reason"])
    other.context.check_hostname = False  # our own look at its execution log
    c.eq(other.executions(), [], "the other simulator executed nothing")
    other.stop()


dl.run("test_dispatch_https", body, tls=True,
       vehicles=[dl.default_vehicle(V, locked=False)], sites=[{"id": SITE}])
