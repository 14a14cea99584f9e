#!/usr/bin/python3
"""Issue 16, what a campaign is refused for, and who may do what:

* a tenant over its daily budget is refused whole (budget_exceeded with
  reset_at); a device naming an account fleetqd does not have is
  unknown_account naming it; a device listed twice is bad_param naming it;
  a not_before more than 30 days ahead is bad_param; more than 100,000
  devices over the parts is bad_request naming the limit; in each case
  nothing is stored (campaign_get: not_found, or the parts before only);
* with CURVE: campaign needs the submit role, campaign_get read,
  campaign_abort cancel, each for the campaign's tenant; another tenant's
  campaign by id is not_found.
"""
import json
import os
import shutil
import tempfile
import time

import zmq

from lib import fqlib
from lib.fqlib import Client, Daemon

TMP = tempfile.mkdtemp(prefix="fq-camp-rules-")
fqlib._cleanups.append(lambda: shutil.rmtree(TMP, ignore_errors=True))


def devs(cars, account="acct1"):
    return [{"vin": v, "account": account} for v in cars]


def add_account(cl, name="acct1"):
    return cl.call({"op": "admin", "action": "account_add", "account": name,
                    "access_token": f"{name}-opaque-token", "refresh_token": "refresh-not-secret",
                    "client_id": "test-client", "base_url": "http://127.0.0.1:9"})


def rules(c):
    cfg = os.path.join(TMP, "fleetqd.json")
    with open(cfg, "w") as f:
        json.dump({"budgets": {"nowake": {"daily_wakeups": 0}}}, f)
    d = Daemon(shards=2, extra=["--config", cfg, "--no-dispatch"])
    d.start()
    cl = Client(d.endpoint, timeout=30)
    c.ok(add_account(cl).get("ok"), "account added")

    def camp(tenant, key, cars, **kw):
        m = {"op": "campaign", "tenant": tenant, "key": key, "command": "flash_lights",
             "devices": cars}
        m.update(kw)
        return cl.call(m)

    def gone(tenant, key, what):
        g = cl.call({"op": "campaign_get", "tenant": tenant, "key": key})
        c.eq(g.get("error"), "not_found", f"{what}: nothing stored", g)

    r = camp("nowake", "b1", devs([fqlib.vin(1)]))
    c.eq(r.get("error"), "budget_exceeded", "over budget: refused whole", r)
    c.ok(isinstance(r.get("reset_at"), int) and r["reset_at"] > time.time() * 1000,
         "budget refusal carries reset_at", r.get("reset_at"))
    gone("nowake", "b1", "budget")

    r = camp("acme", "ghost", devs([fqlib.vin(2)]) + devs([fqlib.vin(3)], account="ghost"))
    c.eq(r.get("error"), "unknown_account", "unknown account refused", r)
    c.ok("\"devices\"[1]" in r.get("message", "") and "ghost" in r.get("message", ""),
         "the message names the device and the account", r.get("message"))
    gone("acme", "ghost", "unknown account")

    r = camp("acme", "twice", devs([fqlib.vin(4), fqlib.vin(5), fqlib.vin(4)]))
    c.eq(r.get("error"), "bad_param", "a device listed twice", r)
    c.ok(fqlib.vin(4) in r.get("message", "") and "[2]" in r.get("message", ""),
         "the message names it", r.get("message"))
    gone("acme", "twice", "device twice")

    far = int(time.time() * 1000) + 40 * 86400000
    r = camp("acme", "far", devs([fqlib.vin(6)]), not_before=far)
    c.eq(r.get("error"), "bad_param", "not_before 40 days ahead", r)
    gone("acme", "far", "far not_before")

    # 100,000 devices over the parts: 20 parts of 5,000 fit, a 21st does not.
    n = 0
    for p in range(1, 21):
        cars = [fqlib.vin(100000 + n + i) for i in range(5000)]
        n += 5000
        r = camp("acme", "huge", devs(cars), part=p, parts=21)
        if not r.get("ok"):
            break
    c.eq((r.get("ok"), r.get("devices"), r.get("state")), (True, 100000, "receiving"),
         "20 parts of 5,000 devices received", {k: r.get(k) for k in ("ok", "error", "message")})
    r = camp("acme", "huge", devs([fqlib.vin(900000)]), part=21, parts=21)
    c.eq(r.get("error"), "bad_request", "a 100,001st device is refused", r)
    c.ok("100000" in r.get("message", ""), "the message names the limit", r.get("message"))
    g = cl.call({"op": "campaign_get", "tenant": "acme", "key": "huge"})
    c.eq((g.get("state"), g.get("devices"), g.get("parts_received")), ("receiving", 100000, 20),
         "the parts before are kept")
    c.eq(cl.call({"op": "campaign_get", "id": "c-0000000000000000"}).get("error"), "not_found",
         "unknown id: not_found")

    # Energy sites: the key is <key>/<site id>, params as for a submit.
    r = cl.call({"op": "campaign", "tenant": "acme", "key": "sites", "command": "backup",
                 "params": {"backup_reserve_percent": 40},
                 "devices": [{"site": 12, "account": "acct1"}, {"site": 13, "account": "acct1"}]})
    c.eq((r.get("ok"), r.get("devices")), (True, 2), "a campaign of energy sites", r)
    one = cl.call({"op": "get", "tenant": "acme", "key": "sites/13"}).get("command", {})
    c.eq((one.get("site"), one.get("command"), one.get("params"), one.get("campaign")),
         (13, "backup", {"backup_reserve_percent": 40}, r.get("id")), "a site's device command")
    # A device command is an ordinary command: cancel works, the counts follow.
    x = cl.call({"op": "cancel", "tenant": "acme", "key": "sites/12"})
    c.eq(x.get("command", {}).get("state"), "cancelled", "cancel of one device command", x)
    g = cl.call({"op": "campaign_get", "tenant": "acme", "key": "sites"})
    c.eq(g.get("counts"), {"queued": 1, "cancelled": 1}, "the counts show it", g)
    r = cl.call({"op": "campaign", "tenant": "acme", "key": "sites2", "command": "backup",
                 "params": {"backup_reserve_percent": 400},
                 "devices": [{"site": 12, "account": "acct1"}]})
    c.eq(r.get("error"), "bad_param", "params checked as for a submit", r)
    cl.close()
    c.eq(d.term(), 0, "fleetqd exits 0")


def curve(c):
    pub, sec = zmq.curve_keypair()
    server_pub, server_sec = pub.decode(), sec.decode()
    keyfile = os.path.join(TMP, "server.key")
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"public {server_pub}\nsecret {server_sec}\n")
    keys = {n: tuple(k.decode() for k in zmq.curve_keypair())
            for n in ("acme", "globex", "ops", "reader", "writer")}
    entries = [
        {"name": "acme-svc", "key": keys["acme"][0], "tenants": ["acme"],
         "roles": ["submit", "read", "cancel"]},
        {"name": "globex-svc", "key": keys["globex"][0], "tenants": ["globex"],
         "roles": ["submit", "read", "cancel"]},
        {"name": "ops", "key": keys["ops"][0], "tenants": ["*"], "roles": ["admin", "read"]},
        {"name": "acme-reader", "key": keys["reader"][0], "tenants": ["acme"], "roles": ["read"]},
        {"name": "acme-writer", "key": keys["writer"][0], "tenants": ["acme"],
         "roles": ["submit"]},
    ]
    clients = os.path.join(TMP, "clients.json")
    fd = os.open(clients, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(entries, f)
    d = Daemon(shards=2, extra=["--curve-secret", keyfile, "--clients", clients, "--no-dispatch"])
    d.start()

    def cli(name):
        return Client(d.endpoint, timeout=10, curve=(keys[name][0], keys[name][1], server_pub))

    acme, globex, ops, reader, writer = (cli(n) for n in ("acme", "globex", "ops", "reader",
                                                          "writer"))
    c.ok(add_account(ops).get("ok"), "the admin adds the account")
    camp = {"op": "campaign", "tenant": "acme", "key": "k", "command": "flash_lights",
            "devices": devs([fqlib.vin(7), fqlib.vin(8)])}
    r = reader.call(camp)
    c.eq(r.get("error"), "forbidden", "campaign without the submit role", r)
    c.ok("submit" in r.get("message", ""), "the message names the role", r.get("message"))
    r = globex.call(camp)
    c.eq(r.get("error"), "forbidden", "campaign for another tenant", r)
    r = writer.call(camp)
    c.eq((r.get("ok"), r.get("devices")), (True, 2), "the submit role starts a campaign", r)
    cid = r.get("id")
    g = reader.call({"op": "campaign_get", "tenant": "acme", "key": "k"})
    c.eq((g.get("ok"), g.get("counts")), (True, {"queued": 2}), "read role: campaign_get", g)
    g = writer.call({"op": "campaign_get", "id": cid})
    c.eq(g.get("error"), "forbidden", "campaign_get without the read role", g)
    g = globex.call({"op": "campaign_get", "id": cid})
    c.eq(g.get("error"), "not_found", "another tenant's campaign by id: not_found", g)
    a = writer.call({"op": "campaign_abort", "id": cid})
    c.eq(a.get("error"), "forbidden", "campaign_abort without the cancel role", a)
    a = globex.call({"op": "campaign_abort", "id": cid})
    c.eq(a.get("error"), "not_found", "another tenant cannot abort it", a)
    a = acme.call({"op": "campaign_abort", "id": cid})
    c.eq((a.get("ok"), a.get("cancelled")), (True, 2), "the cancel role aborts it", a)
    for x in (acme, globex, ops, reader, writer):
        x.close()
    c.eq(d.term(), 0, "fleetqd exits 0")


c = fqlib.Checks("test_campaign_rules")
try:
    rules(c)
    curve(c)
except Exception:
    import traceback
    traceback.print_exc()
    c.failed += 1
c.finish()
