"""`fleetq account` against the real fleetqd and a real fleetsim: add (tokens
from a file and from stdin), list, get, remove; tokens on the command line
(--access-token, --refresh-token) refused with exit 2 and the reason, nothing
sent; refusals (bad base URL, bad region, unknown keys in a raw admin
request, usage errors); tokens never in
any output nor in clear on disk, token.key 0600; an almost expired token
is refreshed by the daemon at once through fleetsim's token endpoint, the
rotated refresh token is what fleetsim now holds and survives kill -9; a
refresh token fleetsim does not know is rejected and shown as a refresh
failure; SIGTERM still exits 0 with the auth thread running."""
import json
import os
import shutil
import stat
import tempfile
import time

from lib import dispatch as dl
from lib import fqlib
from lib.fqlib import cli, log

SCOPES = ["openid", "offline_access", "vehicle_device_data", "vehicle_cmds"]


def account_json(d, acct):
    r = cli("account", "get", "--endpoint", d.endpoint, "--account", acct, "--json")
    if r.returncode != 0:
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])["account"]


def add(tmp, ep, at, rt, *args):
    """`fleetq account add` with the access token in a 0600 file and the
    refresh token on stdin (the only ways the CLI takes them)."""
    fd, atf = tempfile.mkstemp(dir=tmp, prefix="at-")
    with os.fdopen(fd, "w") as f:
        f.write(at + "\n")
    return cli("account", "add", *ep, *args, "--access-token-file", atf,
               "--refresh-token-file", "-", input_=rt + "\n")


def body(c):
    tmp = tempfile.mkdtemp(prefix="fq-acct-")
    fqlib._cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    sim = dl.Sim({"accounts": [
        {"id": "simacct", "token": "sim-access-1", "refresh_token": "sim-refresh-1"},
        {"id": "other", "token": "sim-access-2", "refresh_token": "sim-refresh-2"}]}, dir=tmp)
    sim.start()
    # A second fleetsim over HTTPS with a throwaway CA: the token endpoint
    # is reached with TLS verification on, trusting the CA via --ca-file.
    tls = dl.make_tls(tmp)
    tsim = dl.Sim({"accounts": [{"id": "tlsacct", "token": "tls-access",
                                 "refresh_token": "tls-refresh-1"}]},
                  dir=tmp, tls=tls, name="fleetsim-tls")
    tsim.start()
    d = fqlib.Daemon(shards=2, extra=["--ca-file", tls[2]])
    d.start()
    ep = ["--endpoint", d.endpoint]

    # Empty at first.
    r = cli("account", "list", *ep)
    c.eq(r.returncode, 0, "list rc", r.stderr)
    c.ok("no accounts" in r.stdout, "list says none", r.stdout)
    r = cli("account", "list", *ep, "--json")
    c.eq(json.loads(r.stdout), {"ok": True, "accounts": []}, "list --json empty")

    # Add with the access token from a file and the refresh token on stdin.
    at = dl.make_jwt("u1", SCOPES, ["https://fleet-api.prd.na.vn.cloud.tesla.com"], ttl=8 * 3600)
    rt = "NA_refresh-0f8e7d6c-secret"
    atf = os.path.join(tmp, "at.txt")
    with open(atf, "w") as f:
        f.write(at + "\n")
    os.chmod(atf, 0o600)
    r = cli("account", "add", *ep, "--account", "fleet-1", "--client-id", "client-abc",
            "--region", "na", "--access-token-file", atf, "--refresh-token-file", "-",
            input_=rt + "\n")
    c.eq(r.returncode, 0, "add rc", r.stdout, r.stderr)
    c.ok("account added" in r.stdout and "vehicle_cmds" in r.stdout, "add output", r.stdout)
    c.ok("warning" not in r.stderr, "no permission warning for a 0600 file", r.stderr)
    a = account_json(d, "fleet-1")
    c.ok(a is not None, "get --json answers")
    if a:
        c.eq(a["id"], "fleet-1", "id")
        c.eq(a["client_id"], "client-abc", "client id")
        c.eq(a["region"], "na", "region")
        c.eq(a["base_url"], None, "no base url")
        c.eq(a["scopes"], ["vehicle_cmds", "vehicle_device_data"], "scopes from the JWT")
        c.ok(abs(a["access_expires"] - (time.time() + 8 * 3600)) < 120, "expiry from the JWT", a)
        c.ok("refresh_failure" not in a, "no failure", a)

    # Tokens on the command line are refused (ps and shell history show
    # them), whichever of the two, before anything is sent.
    at2 = dl.make_jwt("u2", ["vehicle_cmds", "energy_cmds"], [], ttl=4 * 3600)
    refusals = []
    for flag, args in (
            ("--access-token", ["--access-token", at2, "--refresh-token-file", atf]),
            ("--refresh-token", ["--access-token-file", atf, "--refresh-token",
                                 "EU_rt-2-secret"]),
            ("--access-token", ["--access-token", at2, "--refresh-token", "EU_rt-2-secret"])):
        r = cli("account", "add", *ep, "--account", "fleet-2", "--client-id", "c2",
                "--region", "eu", *args)
        c.eq(r.returncode, 2, f"{flag} on the command line: usage error", r.stdout, r.stderr)
        c.ok(f"{flag} is refused" in r.stderr, f"says {flag} is refused", r.stderr)
        c.ok("ps" in r.stderr and "shell history" in r.stderr, "says why", r.stderr)
        c.ok(f"{flag}-file F" in r.stderr and "standard input" in r.stderr,
             "says what to use instead", r.stderr)
        c.eq(r.stdout, "", "nothing on stdout")
        refusals.append(r.stdout + r.stderr)
    # Also for actions other than add, and without a value's worth of
    # other options.
    r = cli("account", "list", *ep, "--access-token", "x")
    c.eq(r.returncode, 2, "list with --access-token: usage error", r.stderr)
    c.eq(account_json(d, "fleet-2"), None, "no refused add reached the daemon")
    # From files, an existing id is replaced (fleet-2 added, then again).
    for i in range(2):
        r = add(tmp, ep, at2, "EU_rt-2-secret", "--account", "fleet-2", "--client-id", "c2",
                "--region", "eu", "--json")
        c.eq(r.returncode, 0, f"add fleet-2 (#{i + 1}) rc", r.stderr)
    outs = refusals[:]
    for args in (["list"], ["list", "--json"], ["get", "--account", "fleet-1"],
                 ["get", "--account", "fleet-2", "--json"]):
        rr = cli("account", *args, *ep)
        c.eq(rr.returncode, 0, f"account {' '.join(args)} rc", rr.stderr)
        outs.append(rr.stdout + rr.stderr)
    outs.append(r.stdout + r.stderr)
    for secret in (at, rt, at2, "EU_rt-2-secret"):
        c.ok(all(secret not in o for o in outs), "no token in any CLI output")
    listing = json.loads(cli("account", "list", *ep, "--json").stdout)["accounts"]
    c.eq([x["id"] for x in listing], ["fleet-1", "fleet-2"], "list sorted by id")

    # At rest: token.key 0600, tokens encrypted.
    key = os.path.join(d.data, "token.key")
    st = os.stat(key)
    c.eq(stat.S_IMODE(st.st_mode), 0o600, "token.key mode")
    blob = b""
    for root, _, files in os.walk(os.path.join(d.data, "accounts")):
        for fn in files:
            with open(os.path.join(root, fn), "rb") as f:
                blob += f.read()
    c.ok(len(blob) > 0, "account store exists")
    for secret in (at, rt, at2, "EU_rt-2-secret"):
        c.ok(secret.encode() not in blob, "token not in clear on disk")
    c.ok(b"client-abc" in blob, "clear fields are stored (sanity of the scan)")

    # Refusals.
    r = add(tmp, ep, "a", "r", "--account", "x", "--client-id", "c",
            "--base-url", "http://fleet-api.example.com")
    c.eq(r.returncode, 1, "plain http to a remote host refused", r.stderr)
    c.ok("bad_param" in r.stderr and "base_url" in r.stderr, "names base_url", r.stderr)
    r = add(tmp, ep, "a", "r", "--account", "x", "--client-id", "c",
            "--base-url", "https://collector.example.net")
    c.eq(r.returncode, 1, "non-Tesla host refused", r.stderr)
    r = add(tmp, ep, "a", "r", "--account", "x", "--client-id", "c", "--region", "us")
    c.eq(r.returncode, 1, "bad region refused", r.stderr)
    c.ok("region" in r.stderr, "names region", r.stderr)
    r = add(tmp, ep, "a", "r", "--account", "x", "--client-id", "c", "--region", "na",
            "--base-url", "https://a.tesla.com")
    c.eq(r.returncode, 2, "region and base url together: usage error", r.stderr)
    r = cli("account", "get", *ep, "--account", "nobody")
    c.eq(r.returncode, 1, "get unknown rc", r.stderr)
    c.ok("not_found" in r.stderr, "not_found", r.stderr)
    r = cli("account", "--help")
    c.ok(r.returncode == 0 and "ps" in r.stdout and "--access-token-file" in r.stdout,
         "help warns about tokens on the command line", r.stdout)
    c.ok("--access-token T" not in r.stdout and "are refused" in r.stdout,
         "help no longer offers tokens on the command line", r.stdout)
    c.ok("--curve-key FILE" in r.stdout and "FLEETQ_SERVER_KEY" in r.stdout,
         "help documents the CURVE options", r.stdout)

    # A raw admin request: strict keys, req echoed, through the ingress.
    cl = fqlib.Client(d.endpoint)
    rep = cl.call({"op": "admin", "action": "account_get", "account": "fleet-1", "acount": "x",
                   "req": 99})
    c.eq((rep.get("ok"), rep.get("error"), rep.get("req")), (False, "bad_request", 99),
         "unknown key refused", rep)
    c.ok('"acount"' in rep.get("message", ""), "message names the key", rep)
    rep = cl.call({"op": "admin", "action": "account_list", "req": "r"})
    c.eq((rep.get("ok"), rep.get("req")), (True, "r"), "raw list ok", rep)
    rep = cl.call({"op": "admin", "action": "nope"})
    c.eq(rep.get("error"), "bad_request", "unknown action", rep)

    # Refresh through fleetsim: the access token expires in 2 minutes, so the
    # daemon refreshes it right after the add.
    exp_soon = dl.make_jwt("simacct", SCOPES, [sim.base], ttl=120)
    r = add(tmp, ep, exp_soon, "sim-refresh-1", "--account", "simacct",
            "--client-id", "sim-client", "--base-url", sim.base)
    c.eq(r.returncode, 0, "add sim account", r.stderr)
    got = fqlib.wait_for(lambda: (account_json(d, "simacct") or {}).get("access_expires", 0)
                         > time.time() + 3600, timeout=15)
    c.ok(got, "refreshed by the daemon", account_json(d, "simacct"), d.log_tail())
    srt = sim.account("simacct")["refresh_token"]
    c.ok(srt.startswith("NA_sim1"), "fleetsim rotated exactly once", srt)
    # The rotated token is durable: after kill -9 the daemon still has the
    # fresh access token and does not refresh it again.
    d.kill9()
    d.start()
    a = account_json(d, "simacct")
    c.ok(a and a["access_expires"] > time.time() + 3600, "fresh token after kill -9", a)
    c.eq(sim.account("simacct")["refresh_token"], srt, "no refresh at restart (token fresh)")

    # The same over HTTPS.
    r = add(tmp, ep, dl.make_jwt("tlsacct", SCOPES, [tsim.base], ttl=90), "tls-refresh-1",
            "--account", "tlsacct", "--client-id", "sim-client", "--base-url", tsim.base)
    c.eq(r.returncode, 0, "add https sim account", r.stderr)
    got = fqlib.wait_for(lambda: (account_json(d, "tlsacct") or {}).get("access_expires", 0)
                         > time.time() + 3600, timeout=15)
    c.ok(got, "refreshed over HTTPS", account_json(d, "tlsacct"), d.log_tail())
    c.ok(tsim.account("tlsacct")["refresh_token"].startswith("NA_sim1"),
         "https fleetsim rotated once", tsim.account("tlsacct"))

    # Rejected refresh: fleetsim does not know this refresh token.
    r = add(tmp, ep, dl.make_jwt("other", SCOPES, [sim.base], ttl=60), "not-known-here",
            "--account", "other", "--client-id", "sim-client", "--base-url", sim.base)
    c.eq(r.returncode, 0, "add account with a dead refresh token", r.stderr)
    got = fqlib.wait_for(lambda: "refresh_failure" in (account_json(d, "other") or {}), timeout=15)
    c.ok(got, "refresh failure recorded", account_json(d, "other"), d.log_tail())
    a = account_json(d, "other") or {}
    c.ok("login_required" in a.get("refresh_failure", "") and
         "fleetq account add" in a.get("refresh_failure", ""), "failure says what to do", a)
    r = cli("account", "list", *ep)
    c.ok("REFRESH FAILED" in r.stdout, "list marks the account", r.stdout)
    r = cli("account", "get", *ep, "--account", "other")
    c.ok("refresh_failure" in r.stdout, "get shows the failure", r.stdout)
    with open(d.logpath, "rb") as f:
        daemon_log = f.read()
    for secret in (at, rt, at2, exp_soon, "sim-refresh-1", "not-known-here", srt):
        c.ok(secret.encode() not in daemon_log, "no token in the daemon log")

    # Remove.
    r = cli("account", "remove", *ep, "--account", "fleet-1")
    c.eq(r.returncode, 0, "remove rc", r.stderr)
    r = cli("account", "remove", *ep, "--account", "fleet-1")
    c.eq(r.returncode, 1, "remove again rc", r.stderr)
    c.ok("not_found" in r.stderr, "remove again: not_found", r.stderr)
    listing = json.loads(cli("account", "list", *ep, "--json").stdout)["accounts"]
    c.eq([x["id"] for x in listing], ["fleet-2", "other", "simacct", "tlsacct"], "after remove")

    c.eq(d.term(), 0, "SIGTERM exits 0")
    log("account CLI checks done")


fqlib.run_test("test_account_cli", body)
