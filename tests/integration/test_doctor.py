#!/usr/bin/python3
"""Issue 14 point 10: `fleetq doctor` against fleetsim.

One world (fleetsim + fleetqd + accounts added with `fleetq account add`):

* all pass: a paired modern car and an unpaired legacy car (needs no
  key), every scope, the domain's registered key = the fleet key (also
  through --config and with the public key PEM as --key): exit 0, --json
  parses and says ok;
* failing cases, each exit 1 naming the problem: an unpaired car (with the
  pairing link), a VIN the account does not have, a missing scope (with the
  consent link), a domain registered with another key, a domain with no key
  registered, an account served from another region;
* an account whose base URL does not answer: exit 3 (unreachable);
* usage errors exit 2; an account fleetqd does not have exits 1."""

import json
import os

from lib import dispatch as dl
from lib.fqlib import cli

V_OK = dl.vin(1401)
V_LEGACY = dl.vin(1402)
V_UNPAIRED = dl.vin(1403)
V_UNKNOWN = dl.vin(1499)
OTHER_DOMAIN = "other.example.com"
NOKEY_DOMAIN = "nokey.example.com"
NO_ENERGY = ["openid", "offline_access", "vehicle_device_data", "vehicle_cmds",
             "vehicle_charging_cmds"]


def doctor(w, *args, account="acct1", key=None, domain=dl.PAIRING_DOMAIN, json_=True):
    a = ["doctor", "--account", account, "--data", w.daemon.data,
         "--key", key or w.private_pem, "--domain", domain, "--timeout", "5"]
    if json_:
        a.append("--json")
    r = cli(*(a + list(args)))
    out = None
    if json_:
        try:
            out = json.loads(r.stdout)
        except ValueError:
            out = None
    return r, out


def checks_by_name(out):
    return {ch["check"]: ch for ch in (out or {}).get("checks", [])}


def body(c, w):
    # ---- everything passes ----------------------------------------------
    r, out = doctor(w, "--vin", V_OK, "--vin", V_LEGACY)
    c.eq(r.returncode, 0, "all pass: exit 0", r.stdout, r.stderr)
    c.ok(out is not None, "--json output parses", r.stdout)
    ch = checks_by_name(out)
    c.eq(sorted(ch), sorted(["token", "scopes", "region", "public_key", f"vin {V_OK}",
                             f"vin {V_LEGACY}"]), "every check reported")
    c.ok(all(x["ok"] for x in ch.values()), "every check ok", out)
    c.eq((out or {}).get("ok"), True, "json ok: true")
    c.ok("key paired" in ch.get(f"vin {V_OK}", {}).get("detail", ""), "paired car: key paired",
         ch.get(f"vin {V_OK}"))
    c.ok("needs signed commands" in ch.get(f"vin {V_OK}", {}).get("detail", ""),
         "paired car: says it needs signed commands", ch.get(f"vin {V_OK}"))
    c.ok("unsigned REST" in ch.get(f"vin {V_LEGACY}", {}).get("detail", ""),
         "legacy car: takes unsigned commands, pairing not needed", ch.get(f"vin {V_LEGACY}"))
    secret = w.accounts[0]["token"]
    c.ok(secret not in r.stdout and secret not in r.stderr, "the access token is never printed")

    # text output, the public key PEM as --key, and --config
    r = cli("doctor", "--account", "acct1", "--data", w.daemon.data, "--key", w.public_pem,
            "--domain", dl.PAIRING_DOMAIN, "--vin", V_OK)
    c.eq(r.returncode, 0, "text output, public PEM as --key: exit 0", r.stdout, r.stderr)
    c.ok("pass" in r.stdout and "FAIL" not in r.stdout, "text lists pass lines", r.stdout)
    cfg = os.path.join(w.tmp, "fleetqd.json")
    with open(cfg, "w") as f:
        json.dump({"data": w.daemon.data, "key": w.private_pem,
                   "pairing_domain": dl.PAIRING_DOMAIN}, f)
    r = cli("doctor", "--account", "acct1", "--config", cfg, "--json")
    c.eq(r.returncode, 0, "settings from --config: exit 0", r.stdout, r.stderr)

    # ---- failing cases ----------------------------------------------------
    r, out = doctor(w, "--vin", V_OK, "--vin", V_UNPAIRED)
    ch = checks_by_name(out)
    c.eq(r.returncode, 1, "unpaired car: exit 1", r.stdout, r.stderr)
    u = ch.get(f"vin {V_UNPAIRED}", {})
    c.eq(u.get("ok"), False, "unpaired car: its check fails", u)
    c.ok("not paired" in u.get("detail", ""), "unpaired car: says not paired", u)
    c.eq(u.get("link"), dl.PAIRING_LINK, "unpaired car: gives the pairing link", u)
    c.eq(ch.get(f"vin {V_OK}", {}).get("ok"), True, "the paired car still passes")
    c.eq((out or {}).get("failed"), 1, "exactly one check failed", out)

    r, out = doctor(w, "--vin", V_UNKNOWN)
    u = checks_by_name(out).get(f"vin {V_UNKNOWN}", {})
    c.eq(r.returncode, 1, "unknown VIN: exit 1", r.stdout, r.stderr)
    c.ok(u.get("ok") is False and "unknown VIN" in u.get("detail", ""),
         "unknown VIN: named as such", u)

    r, out = doctor(w, account="acct2")
    s = checks_by_name(out).get("scopes", {})
    c.eq(r.returncode, 1, "missing scope: exit 1", r.stdout, r.stderr)
    c.ok(s.get("ok") is False and "energy_cmds" in s.get("detail", "")
         and "vehicle_cmds," not in s.get("detail", ""),
         "missing scope: names energy_cmds only", s)
    c.ok(dl.CONSENT_LINK in s.get("link", ""), "missing scope: consent link", s)

    r, out = doctor(w, domain=OTHER_DOMAIN)
    k = checks_by_name(out).get("public_key", {})
    c.eq(r.returncode, 1, "wrong registered key: exit 1", r.stdout, r.stderr)
    c.ok(k.get("ok") is False and "is not the fleet key" in k.get("detail", ""),
         "wrong registered key: says the keys differ", k)
    c.ok(f"https://{OTHER_DOMAIN}/.well-known/appspecific/com.tesla.3p.public-key.pem"
         in k.get("fix", ""), "wrong registered key: says where to host the key", k)
    c.ok(k.get("link", "").startswith("https://developer.tesla.com"),
         "wrong registered key: developer portal link", k)

    r, out = doctor(w, key=w.other_pem)
    k = checks_by_name(out).get("public_key", {})
    c.eq(r.returncode, 1, "fleetqd's key is not the registered one: exit 1", r.stdout, r.stderr)
    c.ok(k.get("ok") is False and "is not the fleet key" in k.get("detail", ""),
         "another --key: keys differ", k)

    r, out = doctor(w, domain=NOKEY_DOMAIN)
    k = checks_by_name(out).get("public_key", {})
    c.eq(r.returncode, 1, "no key registered: exit 1", r.stdout, r.stderr)
    c.ok(k.get("ok") is False and "no public key is registered" in k.get("detail", ""),
         "no key registered: says so", k)

    r, out = doctor(w, account="acct4")
    g = checks_by_name(out).get("region", {})
    c.eq(r.returncode, 1, "other region: exit 1", r.stdout, r.stderr)
    c.ok(g.get("ok") is False and "region eu" in g.get("detail", "")
         and "--region eu" in g.get("fix", ""), "other region: names it and the fix", g)

    r = cli("doctor", "--account", "acct1", "--data", w.daemon.data, "--key", w.private_pem,
            "--domain", dl.PAIRING_DOMAIN, "--vin", V_UNPAIRED)
    c.eq(r.returncode, 1, "text output of a failure: exit 1")
    c.ok("FAIL" in r.stdout and dl.PAIRING_LINK in r.stdout, "text shows FAIL and the link",
         r.stdout)

    # An expired token Fleet API does not take (its refresh fails too, so
    # fleetqd keeps it): the token check fails, and the API says 401.
    dl.add_account(w.daemon.endpoint, "acct5",
                   dl.make_jwt("acct5", dl.ALL_SCOPES, [w.base_url], ttl=-600),
                   "acct5-refresh-unknown", w.base_url)
    r, out = doctor(w, account="acct5")
    ch = checks_by_name(out)
    c.eq(r.returncode, 1, "expired token: exit 1", r.stdout, r.stderr)
    c.ok(ch.get("token", {}).get("ok") is False and "expired" in ch["token"].get("detail", ""),
         "expired token: the token check fails", ch.get("token"))
    c.ok(ch.get("region", {}).get("ok") is False
         and "refused the access token" in ch["region"].get("detail", ""),
         "expired token: Fleet API's 401 is reported", ch.get("region"))

    # A partner token Fleet API refuses: the key check fails and says which
    # token it used.
    bad = os.path.join(w.tmp, "partner.token")
    with open(bad, "w") as f:
        f.write("not-a-partner-token\n")
    os.chmod(bad, 0o600)
    r, out = doctor(w, "--partner-token-file", bad)
    k = checks_by_name(out).get("public_key", {})
    c.eq(r.returncode, 1, "refused partner token: exit 1", r.stdout, r.stderr)
    c.ok(k.get("ok") is False and "partner token" in k.get("fix", ""),
         "refused partner token: names it", k)
    c.eq(checks_by_name(out).get("region", {}).get("ok"), True,
         "the account's own token still serves the other checks")

    # ---- unreachable, usage, unknown account -------------------------------
    r, out = doctor(w, account="acct3")
    c.eq(r.returncode, 3, "Fleet API unreachable: exit 3", r.stdout, r.stderr)
    c.eq((out or {}).get("unreachable"), True, "json says unreachable", out)
    c.ok("could not be reached" in r.stderr, "unreachable: says so on stderr", r.stderr)

    r = cli("doctor", "--data", w.daemon.data, "--key", w.private_pem, "--domain", "x.example")
    c.eq(r.returncode, 2, "no --account: exit 2", r.stderr)
    r, _ = doctor(w, "--vin", "SHORT", json_=False)
    c.eq(r.returncode, 2, "bad VIN: exit 2", r.stderr)
    r = cli("doctor", "--account", "acct1", "--data", w.daemon.data, "--domain", "x.example")
    c.eq(r.returncode, 2, "no fleet key: exit 2", r.stderr)
    r, _ = doctor(w, account="nobody", json_=False)
    c.eq(r.returncode, 1, "account fleetqd does not have: exit 1", r.stderr)
    c.ok("not registered" in r.stderr, "unknown account: says so", r.stderr)
    r = cli("doctor", "--account", "acct1", "--data", os.path.join(w.tmp, "nodata"),
            "--key", w.private_pem, "--domain", dl.PAIRING_DOMAIN)
    c.eq(r.returncode, 1, "missing data dir: exit 1", r.stderr)
    c.ok("does not exist" in r.stderr, "missing data dir: says so", r.stderr)


def main():
    vehicles = [dl.default_vehicle(V_OK), dl.default_vehicle(V_LEGACY, legacy=True, paired=False),
                dl.default_vehicle(V_UNPAIRED, paired=False)]
    accounts = [{"id": "acct1", "vins": [V_OK, V_LEGACY, V_UNPAIRED]},
                {"id": "acct2", "scopes": NO_ENERGY, "vins": [V_OK]},
                {"id": "acct3", "vins": [], "fleetq_base_url": "http://127.0.0.1:9"},
                {"id": "acct4", "vins": [], "region": "eu"}]

    def fn(c, w):
        body(c, w)

    # The world is built unstarted so that the simulator's config can name
    # its own base URL and the registered keys before it starts.
    orig_init = dl.World.__init__

    def init(self, *a, **kw):
        kw["start"] = False
        orig_init(self, *a, **kw)
        r = cli("keygen", "--out", os.path.join(self.tmp, "other"))
        if r.returncode != 0:
            raise RuntimeError(f"keygen: {r.stderr}")
        self.other_pem = os.path.join(self.tmp, "other", "private.pem")
        self.sim.config["base_urls"] = {"na": self.base_url}
        self.sim.config["partner_keys"] = {dl.PAIRING_DOMAIN: self.public_pem,
                                           OTHER_DOMAIN: os.path.join(self.tmp, "other",
                                                                      "public.pem")}
        self.start()

    dl.World.__init__ = init
    dl.run("test_doctor", fn, vehicles=vehicles, accounts=accounts, tap=False)


main()
