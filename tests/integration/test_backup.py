#!/usr/bin/python3
"""Issue 14 point 9: `fleetq backup` under load, then restore.

A producer pipelines submits into a --no-dispatch fleetqd (2 shards, one
account) without pause; mid-stream `fleetq backup` copies the data
directory.  The daemon is stopped, token.key is put into the backup as
docs/operations.md says, and a fresh fleetqd starts on the backup
directory: every command acked before the backup started is there (get by
id: same key, tenant, command, state queued), resubmitting them dedupes
(dup, same id), the account opens with the restored key.  Also: the
manifest parses and describes what was copied (envs, entries, modes 0600 /
0700), a compacted backup of the same data holds the same records, a
non-empty --out is refused (exit 1), and a missing or foreign --data fails
clearly (exit 1)."""

import json
import os
import shutil
import stat
import threading
import time

from lib import fqlib
from lib.fqlib import Client, Daemon, cli, pipeline, vin

SHARDS = 2
MANIFEST = "fleetq-backup.json"


def make_request(i):
    m = {"op": "submit", "tenant": f"bk{i % 3}", "key": f"bk-{i}", "account": "a",
         "ttl_ms": 3600000}
    if i % 2:
        m.update(vin=vin(i % 200), command="set_charge_limit", params={"percent": 50 + i % 51})
    else:
        m.update(vin=vin(i % 200), command="door_lock")
    return m


def produce(endpoint, stop, acked, errors):
    """Pipeline submits (window 200) until stop is set; acked[i] =
    (request, reply, monotonic time the ack arrived)."""
    cl = Client(endpoint)
    sent, inflight, i = {}, 0, 0
    while not stop.is_set() or inflight:
        while not stop.is_set() and inflight < 200:
            m = dict(make_request(i), req=i)
            sent[i] = m
            cl.send(m)
            inflight += 1
            i += 1
        r = cl.recv(5.0)
        if r is None:
            errors.append("no reply within 5 s")
            break
        inflight -= 1
        if r.get("ok"):
            m = sent[r["req"]]
            acked[r["req"]] = ({k: v for k, v in m.items() if k != "req"}, r, time.monotonic())
        else:
            errors.append(r)
    cl.close()


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def check_layout(c, out, manifest):
    c.eq(manifest.get("format"), "fleetq-backup", "manifest format")
    c.eq(manifest.get("shards"), SHARDS, "manifest shard count")
    c.ok(isinstance(manifest.get("created"), str) and manifest["created"].endswith("Z"),
         "manifest created time (ISO UTC)", manifest.get("created"))
    c.ok(manifest.get("fleetq_version"), "manifest fleetq version")
    envs = {e["path"]: e for e in manifest.get("envs", [])}
    c.eq(sorted(envs), sorted([f"shard-{i}" for i in range(SHARDS)] + ["accounts", "campaigns"]),
         "manifest lists every shard, the account store and the campaigns")
    for name, e in envs.items():
        f = os.path.join(out, name, "data.mdb")
        c.ok(os.path.isfile(f), f"{name}/data.mdb exists")
        if os.path.isfile(f):
            c.eq(e.get("bytes"), os.path.getsize(f), f"{name}: manifest bytes = file size")
            c.eq(mode(f), 0o600, f"{name}/data.mdb is 0600")
        c.eq(mode(os.path.join(out, name)), 0o700, f"{name}/ is 0700")
        c.ok(isinstance(e.get("last_txnid"), int) and e["last_txnid"] > 0,
             f"{name}: last txn id", e)
        c.ok(isinstance(e.get("entries"), int), f"{name}: entries", e)
    c.ok(sum(envs[f"shard-{i}"]["entries"] for i in range(SHARDS) if f"shard-{i}" in envs) > 0,
         "the shards' copies hold records")
    c.eq(envs.get("accounts", {}).get("entries"), 1, "the account store copy holds the account")
    c.eq(mode(out), 0o700, "backup dir is 0700")
    c.eq(mode(os.path.join(out, MANIFEST)), 0o600, "manifest is 0600")
    c.eq(mode(os.path.join(out, "SHARDS")), 0o600, "SHARDS is 0600")
    c.ok(not os.path.exists(os.path.join(out, "token.key")), "token.key not copied by default")
    c.ok(not os.path.exists(os.path.join(out, "LOCK")), "the daemon's LOCK is not copied")
    leftovers = [n for n in os.listdir(out) if n.startswith(".")]
    c.eq(leftovers, [], "no temporary files left")
    return envs


def main(c):
    d = Daemon(shards=SHARDS, extra=["--no-dispatch"], accounts=["a"])
    d.start()
    stop = threading.Event()
    acked, errors = {}, []
    th = threading.Thread(target=produce, args=(d.endpoint, stop, acked, errors), daemon=True)
    th.start()
    fqlib.wait_for(lambda: len(acked) >= 3000, timeout=60)

    out = os.path.join(d.tmp, "backup")
    before = dict(acked)  # everything acked before the backup starts
    t_start = time.monotonic()
    r = cli("backup", "--data", d.data, "--out", out, "--json", timeout=120)
    t_end = time.monotonic()
    n_at_end = len(acked)
    time.sleep(0.3)  # load keeps running after the copy, too
    stop.set()
    th.join(30)
    fqlib.log(f"backup took {t_end - t_start:.3f} s; {len(before)} acked before it, "
              f"{n_at_end} when it ended, {len(acked)} in all")
    c.eq(errors, [], "no submit failed during the backup")
    c.ok(n_at_end > len(before), "submits kept being acked while the backup ran",
         len(before), n_at_end)
    c.eq(r.returncode, 0, "fleetq backup exits 0", r.stderr)
    c.ok("token.key not copied" in r.stderr, "it warns that token.key is not in the backup",
         r.stderr)
    try:
        summary = json.loads(r.stdout)
    except ValueError:
        summary = {}
        c.ok(False, "--json output parses", r.stdout)
    with open(os.path.join(out, MANIFEST)) as f:
        manifest = json.load(f)
    c.eq(summary.get("manifest"), manifest, "--json prints the manifest written")
    c.ok(any("token.key" in w for w in summary.get("warnings", [])), "--json carries warnings")
    envs = check_layout(c, out, manifest)
    c.eq(manifest.get("compacted"), False, "not compacted by default")

    # Refusals: a non-empty --out, a missing data directory, a directory
    # that is not fleetqd's.
    r2 = cli("backup", "--data", d.data, "--out", out)
    c.eq(r2.returncode, 1, "non-empty --out: exit 1", r2.stderr)
    c.ok("not empty" in r2.stderr, "non-empty --out: says so", r2.stderr)
    with open(os.path.join(out, MANIFEST)) as f:
        c.eq(json.load(f), manifest, "the refused run left the backup alone")
    missing = os.path.join(d.tmp, "no-such-data")
    r3 = cli("backup", "--data", missing, "--out", os.path.join(d.tmp, "b3"))
    c.eq(r3.returncode, 1, "missing data dir: exit 1", r3.stderr)
    c.ok("does not exist" in r3.stderr and missing in r3.stderr,
         "missing data dir: names it", r3.stderr)
    c.ok(not os.path.exists(os.path.join(d.tmp, "b3")), "missing data dir: nothing created")
    foreign = os.path.join(d.tmp, "foreign")
    os.mkdir(foreign)
    r4 = cli("backup", "--data", foreign, "--out", os.path.join(d.tmp, "b4"))
    c.eq(r4.returncode, 1, "not a data dir: exit 1", r4.stderr)
    c.ok("not a fleetq data directory" in r4.stderr, "not a data dir: says so", r4.stderr)
    inside = os.path.join(d.data, "bk")
    r6 = cli("backup", "--data", d.data, "--out", inside)
    c.eq(r6.returncode, 1, "--out inside the data dir: exit 1", r6.stderr)
    c.ok("inside the data directory" in r6.stderr and not os.path.exists(inside),
         "--out inside the data dir: refused before creating it", r6.stderr)
    r5 = cli("backup", "--data", d.data)
    c.eq(r5.returncode, 2, "no --out: usage error", r5.stderr)

    # Restore: stop the daemon, put the token key in as documented, start
    # a fresh fleetqd on the backup.
    c.eq(d.term(), 0, "the first fleetqd stops (exit 0)")
    shutil.copy2(os.path.join(d.data, "token.key"), os.path.join(out, "token.key"))
    os.chmod(os.path.join(out, "token.key"), 0o600)
    d2 = Daemon(shards=SHARDS, extra=["--no-dispatch"])
    d2.data = out
    d2.start()
    cl = Client(d2.endpoint, timeout=30)
    items = list(before.values())
    greps, gorder = pipeline(cl, [{"op": "get", "id": rep["id"]} for _, rep, _ in items],
                             window=300, timeout=180)
    missing_n = wrong = 0
    for (m, rep, _), q in zip(items, gorder):
        g = greps[q]
        cmd = g.get("command", {})
        if not g.get("ok"):
            missing_n += 1
            if missing_n <= 3:
                fqlib.log(f"  lost: {m['key']} {rep['id']}: {g}")
        elif (cmd.get("key"), cmd.get("tenant"), cmd.get("command"), cmd.get("state")) != \
                (m["key"], m["tenant"], m["command"], "queued"):
            wrong += 1
            if wrong <= 3:
                fqlib.log(f"  wrong: {m} -> {cmd}")
    c.eq(missing_n, 0, f"every command acked before the backup is restored ({len(items)})")
    c.eq(wrong, 0, "restored commands have their key, tenant, command and state queued")

    rnd = fqlib.seeded("backup", 1414)
    sample = rnd.sample(items, min(500, len(items)))
    dreps, dorder = pipeline(cl, [m for m, _, _ in sample], window=300, timeout=120)
    bad = [(m["key"], rep["id"], dreps[q]) for (m, rep, _), q in zip(sample, dorder)
           if not (dreps[q].get("ok") and dreps[q].get("dup") is True
                   and dreps[q].get("id") == rep["id"])]
    c.eq(bad[:3], [], f"dedupe keys still dedupe after the restore ({len(sample)} checked)")

    g = cli("account", "get", "--account", "a", "--endpoint", d2.endpoint, "--json")
    c.eq(g.returncode, 0, "the restored account store opens with the kept token.key", g.stderr)

    # A compacted backup of the restored daemon holds the same records as a
    # plain one taken just before (nothing changes in between: no load).
    cl.close()
    plain = os.path.join(d2.tmp, "plain")
    comp = os.path.join(d2.tmp, "compact")
    rp = cli("backup", "--data", out, "--out", plain, "--include-token-key", "--json")
    rc_ = cli("backup", "--data", out, "--out", comp, "--compact", "--json")
    c.eq((rp.returncode, rc_.returncode), (0, 0), "plain and compact backups of the restore",
         rp.stderr, rc_.stderr)
    try:
        mp, mc = json.loads(rp.stdout)["manifest"], json.loads(rc_.stdout)["manifest"]
        c.eq(mc.get("compacted"), True, "compact backup says so")
        c.eq([(e["path"], e["entries"]) for e in mc["envs"]],
             [(e["path"], e["entries"]) for e in mp["envs"]],
             "compacted copies hold the same number of records")
        c.ok(all(e["compacted"] for e in mc["envs"]), "every env of it marked compacted")
        c.eq((mp.get("token_key_included"), mc.get("token_key_included")), (True, False),
             "manifest says whether token.key is in the backup")
        kp = os.path.join(plain, "token.key")
        c.ok(os.path.isfile(kp) and mode(kp) == 0o600, "--include-token-key: token.key, 0600")
        with open(kp, "rb") as f1, open(os.path.join(out, "token.key"), "rb") as f2:
            c.eq(f1.read(), f2.read(), "--include-token-key: the same key")
        c.ok(not os.path.exists(os.path.join(comp, "token.key")), "not without the flag")
        c.ok("holds usable OAuth tokens" in rp.stderr, "--include-token-key warns", rp.stderr)
        c.ok(MANIFEST in mp.get("not_copied", []),
             "a file that is not fleetqd's (the old manifest) is named, not copied",
             mp.get("not_copied"))
    except (ValueError, KeyError) as e:
        c.ok(False, "backup --json of the restore parses", repr(e), rp.stdout, rc_.stdout)
    c.ok(envs, "manifest envs")
    c.eq(d2.term(), 0, "the restored fleetqd stops (exit 0)")


fqlib.run_test("test_backup", main)
