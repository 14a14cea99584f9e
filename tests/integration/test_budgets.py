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

The reset at the next UTC day is tested without waiting a day in
tests/unit/test_budget.c (count_check_and_rollover)."""
import calendar
import json
import os
import re
import shutil
import tempfile
import time
import urllib.request

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


dl.run("test_budgets", body, sites=[{"id": SITE}], daemon_opts={"--config": CONFIG, "--metrics": f"127.0.0.1:{METRICS_PORT}"})
