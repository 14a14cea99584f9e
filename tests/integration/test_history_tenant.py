#!/usr/bin/python3
"""Issue 11, tseq: every event carries `tseq`, a sequence per (tenant,
shard) that is gap-free from 1; `history` with `tenant` returns only that
tenant's events of the shard, in tseq order, paging by tseq (`after` /
`next`), also through `fleetq history --tenant`; and the sequence survives
a restart (SIGTERM, start again): new events continue at n+1."""

from lib import fqlib
from lib.fqlib import Client, Daemon, Sub, cli, vin

SHARDS = 2
TENANTS = ("acme", "beta")


def submit_round(c, cl, label, count):
    """count submits per tenant, interleaved, over a few cars of each
    shard; plus one cancel per tenant.  Returns the ids."""
    ids = []
    for i in range(count):
        for t in TENANTS:
            r = cl.submit(t, f"{label}-{t}-{i}", vin_=vin(i % 10), command="door_lock",
                          ttl_ms=3600000)
            c.ok(r.get("ok"), f"{label}: submit {t} {i}", r)
            ids.append(r.get("id"))
    for t in TENANTS:
        r = cl.cancel(tenant=t, key=f"{label}-{t}-0")
        c.ok(r.get("ok"), f"{label}: cancel {t}", r)
    return ids


def by_tenant_paged(c, cl, shard, tenant, after=0, limit=7):
    """Every event of tenant on shard after tseq `after`, following `next`
    page by page; checks each page's `next`."""
    out = []
    while True:
        r = cl.history(shard, after=after, limit=limit, tenant=tenant)
        if not c.ok(r.get("ok"), f"history shard {shard} tenant {tenant} after {after}", r):
            return out
        evs = r["events"]
        want_next = evs[-1].get("tseq") if evs else after
        c.eq(r.get("next"), want_next, f"shard {shard} {tenant}: next after {after}")
        out += evs
        if len(evs) < limit:
            return out
        after = r["next"]


def check_logs(c, cl, label):
    """For every shard and tenant: history by tenant == that tenant's part of
    the shard's whole log, with tseq 1..n.  Returns {(shard, tenant): n}."""
    counts = {}
    for sh in range(SHARDS):
        full = cl.history_all(sh)
        for t in TENANTS:
            mine = [e for e in full if e["tenant"] == t]
            got = by_tenant_paged(c, cl, sh, t)
            c.eq([e.get("tseq") for e in got], list(range(1, len(mine) + 1)),
                 f"{label}: shard {sh} {t}: tseq 1..n without a gap")
            c.ok(got == mine, f"{label}: shard {sh} {t}: history by tenant = the tenant's "
                 f"events of the shard log", len(got), len(mine))
            c.ok(all(e["tenant"] == t and e["shard"] == sh for e in got),
                 f"{label}: shard {sh} {t}: only that tenant's events")
            counts[(sh, t)] = len(mine)
    return counts


def check_published(c, evs, label, start):
    """Published events: per (shard, tenant), tseq continues from start."""
    per = {}
    for _, e in evs:
        per.setdefault((e["shard"], e["tenant"]), []).append(e.get("tseq"))
    for key, tseqs in sorted(per.items()):
        first = start.get(key, 0) + 1
        c.eq(tseqs, list(range(first, first + len(tseqs))),
             f"{label}: published tseq of shard {key[0]} tenant {key[1]}")
    return per


def main(c):
    d = Daemon(shards=SHARDS, extra=["--no-dispatch"], accounts=["acct1"])
    d.start()
    cl = Client(d.endpoint)
    sub = Sub(d.publish)
    submit_round(c, cl, "r1", 12)
    pub1 = sub.collect(timeout=1.5)
    c.ok(len(pub1) >= 26, "round 1: events published", len(pub1))
    c.ok(all(set(e) - {"vin", "site"} == fqlib.EVENT_KEYS for _, e in pub1),
         "every event has the 16 keys (tseq included)", pub1[:1])
    check_published(c, pub1, "round 1", {})
    n1 = check_logs(c, cl, "round 1")
    c.ok(all(n1.get((sh, t), 0) > 0 for sh in range(SHARDS) for t in TENANTS),
         "both tenants have events on both shards", n1)

    # Pages by tseq: a middle page, and past the end (on the shard where
    # acme has the most events).
    t = "acme"
    sh = max(range(SHARDS), key=lambda s: n1[(s, t)])
    n = n1[(sh, t)]
    c.ok(n >= 6, "enough events for paging", n1)
    r = cl.history(sh, after=2, limit=3, tenant=t)
    c.eq([e.get("tseq") for e in r.get("events", [])], [3, 4, 5], "page after tseq 2, limit 3")
    c.eq(r.get("next"), 5, "its next is the last tseq returned")
    r = cl.history(sh, after=n, tenant=t)
    c.eq((r.get("ok"), r.get("events"), r.get("next")), (True, [], n),
         "after the tenant's last tseq: empty, next = after")
    r = cl.history(sh, tenant="nobody")
    c.eq((r.get("ok"), r.get("events"), r.get("next")), (True, [], 0),
         "a tenant without events: empty")
    r = cl.history(sh, tenant="ac me")
    c.eq((r.get("ok"), r.get("error")), (False, "bad_request"), "history tenant is validated")
    c.ok("tenant" in r.get("message", ""), "the message names the field", r)

    # The CLI: --tenant pages by tseq and shows it.
    ep = ("--endpoint", d.endpoint)
    p = cli("history", "--shard", sh, "--tenant", t, "--limit", 1000, "--json", *ep)
    c.eq(p.returncode, 0, "fleetq history --tenant --json", p.stderr)
    j = fqlib.json_lines(p.stdout) if p.returncode == 0 else []
    c.eq([e.get("tseq") for e in (j[0].get("events", []) if j else [])], list(range(1, n + 1)),
         "CLI --json: tseq 1..n")
    c.eq(j[0].get("next") if j else None, n, "CLI --json: next = n")
    p = cli("history", "--shard", sh, "--tenant", t, "--after", n - 2, *ep)
    c.eq(p.returncode, 0, "fleetq history --tenant (text)", p.stderr)
    out = p.stdout.splitlines()
    c.ok(len(out) == 3 and f"tseq {n - 1}" in out[0] and f"tseq {n}" in out[1]
         and out[2] == f"next {n}", "CLI text: two events with their tseq, then next", out)
    p = cli("history", "--shard", sh, "--tenant", "a/b", *ep)
    c.ok(p.returncode != 0 and "tenant" in p.stderr, "CLI: a bad --tenant is refused", p.stderr)

    # Restart: SIGTERM, start on the same data; the sequences continue.
    sub.close()
    cl.close()
    c.eq(d.term(), 0, "SIGTERM: clean exit")
    d.start()
    cl = Client(d.endpoint)
    n_restart = check_logs(c, cl, "after restart")
    c.eq(n_restart, n1, "after restart: the same events, the same tseqs")
    sub = Sub(d.publish)
    submit_round(c, cl, "r2", 6)
    pub2 = sub.collect(timeout=1.5)
    per = check_published(c, pub2, "round 2", n1)
    c.ok(all(per.get(k, [0])[0] == n1[k] + 1 for k in n1 if k in per) and len(per) == len(n1),
         "round 2: each tenant's first new event on each shard has tseq n+1", per, n1)
    n2 = check_logs(c, cl, "round 2")
    c.ok(all(n2[k] > n1[k] for k in n1), "round 2: every (shard, tenant) grew", n1, n2)
    r = cl.history(0, after=n1[(0, "beta")], limit=1000, tenant="beta")
    c.eq([e.get("tseq") for e in r.get("events", [])],
         list(range(n1[(0, "beta")] + 1, n2[(0, "beta")] + 1)),
         "history by tenant after the pre-restart tseq: exactly the new events")
    sub.close()
    cl.close()
    c.eq(d.term(), 0, "SIGTERM at the end: clean exit")


fqlib.run_test("history_tenant", main)
