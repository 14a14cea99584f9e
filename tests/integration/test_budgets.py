"""Per-tenant daily budgets (issue 16, "Budgets") against fleetsim.

Tenant "acme" has daily_billable_requests 3.  Each energy-site command is
one Fleet API POST (nothing signed, no wake, no pre-check), so its answer
is one billable request:

* 4 commands accepted at once (the budget is checked on submit, against
  answers already counted) all finish: commands already accepted continue
  past the budget; the tap saw 4 POSTs, each answered 200;
* then a new acme submit gets budget_exceeded with reset_at = the next UTC
  midnight (unix ms) in the reply and in the message; nothing is stored
  (get by tenant + key: not_found); a duplicate of an accepted key still
  answers dup;
* tenant "beta" (its own larger budget) is not affected; tenant "nowake"
  (daily_wakeups 0) is refused at once, naming daily_wakeups;
* `fleetq usage` (text, --json, --tenant, --days) shows today's counts per
  tenant and account: acme 4, beta 1; fleetq_submits_total counts the 2
  refusals; `fleetq backup` copies the count files;
* after a kill -9 and a restart the counts are kept: acme is still refused
  and usage still shows 4.

Then budgets in the clients file (a second fleetqd, with CURVE and
--no-dispatch: a limit of 0 refuses at once, nothing needs sending):

* for a tenant both files name, the clients file wins (acme: 0 there, 100
  in the config: refused); a tenant it names without limits has none
  (gamma, although the config's "*" is 0); the config's tenants (beta) and
  its "*" (delta) apply otherwise; fleetq_budget_refusals_total{tenant}
  counts each tenant's refusals;
* SIGHUP reloads both (the clients file's and the config's budgets): the
  new limits apply to the next submit; a clients file with a bad budget
  is refused and changes nothing.

The reset at the next UTC day is tested without waiting a day in
tests/unit/test_budget.c (count_check_and_rollover)."""
import calendar
import json
import os
import re
import shutil
import signal
import tempfile
import time
import urllib.request

import zmq

from lib import dispatch as dl
from lib import fqlib

SITE = 4343
TMP = tempfile.mkdtemp(prefix="fq-budgets-")
fqlib._cleanups.append(lambda: shutil.rmtree(TMP, ignore_errors=True))
CONFIG = os.path.join(TMP, "fleetqd.json")
with open(CONFIG, "w") as f:
    json.dump({"budgets": {"acme": {"daily_billable_requests": 3},
                           "beta": {"daily_billable_requests": 100},
                           "nowake": {"daily_wakeups": 0}}}, f)


METRICS_PORT = fqlib.free_port()


def scrape():
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as r:
        return r.status, r.read().decode()


def next_midnight_ms(t):
    g = time.gmtime(t)
    return (calendar.timegm((g.tm_year, g.tm_mon, g.tm_mday, 0, 0, 0)) + 86400) * 1000


def submit(w, tenant, key, pct=30):
    return w.client.call({"op": "submit", "tenant": tenant, "key": key, "account": "acct1",
                          "site": SITE, "command": "backup",
                          "params": {"backup_reserve_percent": pct}})


def usage(w, *args):
    r = dl.cli("usage", "--endpoint", w.daemon.endpoint, *args)
    return r


def body(c, w):
    ids = []
    for i in range(4):
        r = submit(w, "acme", f"acme-{i}", 30 + i)
        c.ok(r.get("ok") and not r.get("dup"), f"acme-{i} accepted", r)
        if r.get("ok"):
            ids.append(r["id"])
            w.events.setdefault(r["id"], [])
    c.ok(w.wait_terminal(ids, 30), "the 4 accepted commands finish", [w.states(i) for i in ids])
    for i in ids:
        w.check_final(c, i, "succeeded", error=None, http=200)
    posts = [x for x in w.tap.records() if x["path"].endswith(f"/energy_sites/{SITE}/backup")]
    c.eq([x["status"] for x in posts], [200] * 4, "4 POSTs, each answered 200")
    c.eq(w.tap.count("wake_up"), 0, "no wake_up")

    t0 = time.time()
    r = submit(w, "acme", "acme-over")
    t1 = time.time()
    c.eq(r.get("error"), "budget_exceeded", "acme over its budget: budget_exceeded", r)
    want = {next_midnight_ms(t0), next_midnight_ms(t1)}
    c.ok(r.get("reset_at") in want, "reset_at is the next UTC midnight", r.get("reset_at"), want)
    c.ok(str(r.get("reset_at")) in r.get("message", ""), "the message says when it resets", r)
    c.ok("daily_billable_requests" in r.get("message", "") and "acme" in r.get("message", ""),
         "the message names the tenant and the limit", r)
    g = w.client.call({"op": "get", "tenant": "acme", "key": "acme-over"})
    c.eq(g.get("error"), "not_found", "nothing stored for the refused submit", g)
    d = submit(w, "acme", "acme-0", 30)
    c.ok(d.get("ok") and d.get("dup") is True and d.get("id") == ids[0],
         "a duplicate of an accepted key still answers dup", d)

    b = submit(w, "beta", "beta-0", 50)
    c.ok(b.get("ok"), "tenant beta is not affected", b)
    if b.get("ok"):
        w.events.setdefault(b["id"], [])
        c.ok(w.wait_terminal([b["id"]], 30), "beta's command finishes", w.states(b["id"]))
    n = submit(w, "nowake", "nw-0")
    c.eq(n.get("error"), "budget_exceeded", "daily_wakeups 0: refused at once", n)
    c.ok("daily_wakeups" in n.get("message", ""), "names daily_wakeups", n)

    today = time.strftime("%Y-%m-%d", time.gmtime())

    def check_usage(what):
        r = usage(w, "--json")
        c.eq(r.returncode, 0, f"{what}: fleetq usage --json exits 0", r.stderr)
        try:
            rows = json.loads(r.stdout)["usage"]
        except Exception:
            rows = None
        got = {(x["date"], x["tenant"], x["account"]): (x["billable"], x["wakeups"])
               for x in rows or []}
        c.eq(got, {(today, "acme", "acct1"): (4, 0), (today, "beta", "acct1"): (1, 0)},
             f"{what}: today's counts per tenant and account", r.stdout)
        r = usage(w, "--tenant", "beta", "--days", "1")
        c.eq(r.returncode, 0, f"{what}: fleetq usage --tenant beta exits 0", r.stderr)
        lines = r.stdout.strip().splitlines()
        c.eq(len(lines), 2, f"{what}: a header and beta's one line", r.stdout)
        c.ok(lines and lines[-1].split() == [today, "beta", "acct1", "1", "0"],
             f"{what}: beta's line", r.stdout)

    check_usage("before the restart")
    code, text = scrape()
    c.eq(code, 200, "metrics scraped")
    m = re.search(r'^fleetq_submits_total\{result="budget_exceeded"\} (\S+)$', text, re.M)
    c.eq(float(m.group(1)) if m else None, 2.0,
         "fleetq_submits_total{result=\"budget_exceeded\"}: acme-over and nw-0")

    # A hot backup carries the counts (journal and snapshot), with no warning about them.
    out = os.path.join(TMP, "backup")
    r = dl.cli("backup", "--data", w.daemon.data, "--out", out)
    c.eq(r.returncode, 0, "fleetq backup exits 0", r.stderr)
    c.ok("budget-usage" not in r.stderr, "no warning about the budget files", r.stderr)
    c.ok(os.path.exists(os.path.join(out, "budget-usage.json")) and
         os.path.exists(os.path.join(out, "budget-usage.log")), "both budget files in the backup",
         os.listdir(out) if os.path.isdir(out) else None)
    r = usage(w, "--days", "0")
    c.eq(r.returncode, 2, "--days 0 is a usage error", r.stdout, r.stderr)
    c.ok("--days" in r.stderr, "naming --days", r.stderr)

    w.restart_daemon(kill9=True)  # the journal keeps what no snapshot holds yet
    r = submit(w, "acme", "acme-over-2")
    c.eq(r.get("error"), "budget_exceeded", "after a restart acme is still over its budget", r)
    check_usage("after the restart")
    w.check_seq(c)
    clients_file_budgets(c)


def write_private(path, obj):
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    os.replace(path + ".tmp", path)


def clients_file_budgets(c):
    server_pub, server_sec = (k.decode() for k in zmq.curve_keypair())
    ops_pub, ops_sec = (k.decode() for k in zmq.curve_keypair())
    keyfile = os.path.join(TMP, "server.key")
    write_private(keyfile, f"public {server_pub}\nsecret {server_sec}\n")
    entries = [{"name": "ops", "key": ops_pub, "tenants": ["*"],
                "roles": ["admin", "submit", "read"]}]
    clients = os.path.join(TMP, "clients.json")
    write_private(clients, {"clients": entries,
                            "budgets": {"acme": {"daily_billable_requests": 0}, "gamma": {}}})
    config = os.path.join(TMP, "fleetqd-curve.json")
    write_private(config, {"budgets": {"acme": {"daily_billable_requests": 100},
                                       "beta": {"daily_wakeups": 0},
                                       "*": {"daily_billable_requests": 0}}})
    port = fqlib.free_port()
    d = fqlib.Daemon(shards=2, config=config,
                     extra=["--curve-secret", keyfile, "--clients", clients, "--no-dispatch",
                            "--metrics", f"127.0.0.1:{port}"])
    d.start()
    cl = fqlib.Client(d.endpoint, timeout=10, curve=(ops_pub, ops_sec, server_pub))
    r = cl.call({"op": "admin", "action": "account_add", "account": "acct1",
                 "access_token": "acct1-opaque-token", "refresh_token": "refresh-not-a-secret",
                 "client_id": "test-client", "base_url": "http://127.0.0.1:9"})
    c.ok(r.get("ok") is True, "curve: the admin key adds the account", r)
    n = [0]

    def sub(tenant):
        n[0] += 1
        return cl.submit(tenant, f"cf-{n[0]}", vin_=fqlib.vin(n[0]))

    def outcomes(what, want):
        got = {t: ("ok" if r.get("ok") else r.get("error")) for t, r in
               ((t, sub(t)) for t in sorted(want))}
        c.eq(got, want, what)

    outcomes("clients file wins for acme (0 over the config's 100), names gamma without "
             "limits (the config's \"*\" does not apply); the config's beta and \"*\" apply",
             {"acme": "budget_exceeded", "beta": "budget_exceeded", "gamma": "ok",
              "delta": "budget_exceeded"})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    got = dict(re.findall(r'^fleetq_budget_refusals_total\{tenant="([^"]*)"\} (\S+)$', text,
                          re.M))
    c.eq(got, {"acme": "1", "beta": "1", "delta": "1"},
         "fleetq_budget_refusals_total per tenant", text[-600:])

    def log_text():
        with open(d.logpath, errors="replace") as f:
            return f.read()

    # SIGHUP: the clients file now limits gamma only; the config only beta
    # (without limits).
    write_private(clients, {"clients": entries, "budgets": {"gamma": {"daily_wakeups": 0}}})
    write_private(config, {"budgets": {"beta": {}}})
    d.proc.send_signal(signal.SIGHUP)
    ok = fqlib.wait_for(lambda: "clients file" in log_text() and "reloaded: 1 key(s)" in log_text()
                        and "budgets from the configuration: 1 tenant(s)" in log_text(),
                        timeout=5)
    c.ok(ok, "SIGHUP reloads the clients file and the config's budgets", d.log_tail(8))
    outcomes("after SIGHUP: only gamma is limited",
             {"acme": "ok", "beta": "ok", "gamma": "budget_exceeded", "delta": "ok"})
    # A clients file with a bad budget is refused: the limits stay.
    write_private(clients, {"clients": entries, "budgets": {"acme": {"daily_wakeups": -1}}})
    d.proc.send_signal(signal.SIGHUP)
    ok = fqlib.wait_for(lambda: "clients file not reloaded" in log_text(), timeout=5)
    c.ok(ok, "a clients file with a bad budget is not reloaded", d.log_tail(8))
    c.ok("daily_wakeups" in log_text() and "must be an integer >= 0" in log_text(),
         "the log names the mistake", d.log_tail(8))
    outcomes("after the refused reload: still only gamma",
             {"acme": "ok", "gamma": "budget_exceeded"})
    cl.close()
    c.eq(d.term(), 0, "curve fleetqd exits 0 on SIGTERM")


dl.run("test_budgets", body, sites=[{"id": SITE}], daemon_opts={"--config": CONFIG, "--metrics": f"127.0.0.1:{METRICS_PORT}"})
