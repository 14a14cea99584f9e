"""Issue 14 point 8: the `health` op and `fleetq health`.

Healthy daemon: exit 0, per shard a read transaction that worked, the
queue depth, the oldest queued age, the last commit age and the map use.
Stuck shard: fleetqd --no-dispatch holds a command queued that nothing
moves, which is exactly what "stuck" means (unfinished work, no commit
for longer than --stuck-ms) and needs no test hook: `fleetq health
--stuck-ms 500` exits 1 naming that shard (and only it) while the default
threshold (30 s) still calls it healthy; cancelling the command makes it
healthy again.  Near full: a 16 MiB map (--map-size-mb 16, one shard)
filled until submits get storage_full: exit 1, the shard near full.
Silent shard: another process holds the LMDB write lock of shard 1's
store (mdb_load, fed its header and then nothing, keeps its write
transaction open: an operator's tool run against a live store), so shard
1's thread blocks at its next batch: health answers within about 2 s all
the same, shard 1 "did not answer" (stuck, exit 1), shard 0 fine; once
the lock is released the shard catches up and is healthy again.
An account whose token refresh fleetsim rejected: exit 1, the account and
its error code named, no token in the output.  Daemon down: exit 3.
Usage errors: exit 2.  The wire op is strict like the others."""
import json
import os
import shutil
import subprocess
import tempfile
import time

from lib import dispatch as dl
from lib import fqlib
from lib.fqlib import Client, Daemon, cli, run_test


def health(d_or_ep, *args, timeout=30):
    ep = d_or_ep if isinstance(d_or_ep, str) else d_or_ep.endpoint
    return cli("health", "--endpoint", ep, *args, timeout=timeout)


def health_json(c, d, *args):
    r = health(d, "--json", *args)
    try:
        return r.returncode, json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        c.ok(False, "health --json prints JSON", r.stdout, r.stderr)
        return r.returncode, {}


def healthy_and_stuck(c):
    d = Daemon(shards=2, accounts=["acct1"], extra=["--no-dispatch"])
    with d:
        r = health(d)
        c.eq(r.returncode, 0, "healthy daemon: exit 0", r.stdout, r.stderr)
        c.ok("healthy" in r.stdout and "shard 0:" in r.stdout and "shard 1:" in r.stdout,
             "text output: a line per shard and the verdict", r.stdout)
        rc, h = health_json(c, d)
        c.eq(rc, 0, "--json: exit 0")
        c.eq(h.get("ok"), True, "reply ok")
        c.eq(h.get("healthy"), True, "healthy", h)
        c.eq(h.get("problems"), [], "no problems")
        c.eq(h.get("accounts"), [], "no account trouble")
        c.eq(h.get("stuck_ms"), 30000, "default threshold")
        shards = h.get("shards", [])
        c.eq([s.get("shard") for s in shards], [0, 1], "one entry per shard")
        for s in shards:
            c.eq((s["answered"], s["read"], s["queued"], s["stuck"], s["near_full"]),
                 (True, "ok", 0, False, False), f"shard {s['shard']} idle and fine", s)
            c.ok(0 < s["map_used_ratio"] < 0.01, "map use ratio sane", s)
            c.ok(0 < s["map_reserved_ratio"] < 0.01, "reserved ratio sane", s)
            c.ok(abs(s["map_high_water_ratio"] - 0.9) < 0.001, "high-water mark 90 %", s)
            c.ok(0 <= s["last_commit_age_ms"] < 600000, "last commit age sane", s)
            c.eq(s["oldest_queued_age_ms"], None, "nothing queued: no oldest age")

        # One command that nothing will move (--no-dispatch).
        cl = Client(d.endpoint)
        rep = cl.submit("acme", "stuck-1", vin_=fqlib.vin(7), ttl_ms=3600000)
        c.eq(rep.get("ok"), True, "submit", rep)
        sid = int(rep["id"][:2], 16)
        time.sleep(1.2)
        r = health(d, "--stuck-ms", "500")
        c.eq(r.returncode, 1, "stuck shard: exit 1", r.stdout, r.stderr)
        c.ok(f"shard {sid} is stuck" in r.stdout, "the stuck shard is named", r.stdout)
        c.ok(f"shard {1 - sid} is stuck" not in r.stdout, "the other shard is not", r.stdout)
        c.ok("UNHEALTHY" in r.stdout, "verdict printed", r.stdout)
        rc, h = health_json(c, d, "--stuck-ms", "500")
        c.eq(rc, 1, "--json: exit 1 too")
        c.eq(h.get("healthy"), False, "not healthy", h)
        s = h["shards"][sid]
        c.eq((s["stuck"], s["queued"]), (True, 1), "stuck, one queued", s)
        c.ok(s["oldest_queued_age_ms"] >= 1000, "oldest queued age counts", s)
        c.ok(s["last_commit_age_ms"] >= 1000, "last commit age counts", s)
        c.eq(h["shards"][1 - sid]["stuck"], False, "other shard fine", h["shards"][1 - sid])
        c.ok(any(f"shard {sid} is stuck" in p for p in h["problems"]), "problem listed",
             h["problems"])
        r = health(d)
        c.eq(r.returncode, 0, "under the default 30 s threshold it is still healthy",
             r.stdout)
        c.eq(cl.cancel(id_=rep["id"]).get("ok"), True, "cancel it")
        r = health(d, "--stuck-ms", "500")
        c.eq(r.returncode, 0, "nothing queued: healthy again", r.stdout)

        # The wire op: req echoed, strict keys.
        got = cl.call({"op": "health", "stuck_ms": 1000, "req": "h1"})
        c.eq((got.get("ok"), got.get("req"), got.get("stuck_ms")), (True, "h1", 1000),
             "wire: reply with req", got)
        got = cl.call({"op": "health", "stuck_ms": "soon", "req": "h2"})
        c.eq((got.get("error"), got.get("req")), ("bad_request", "h2"), "stuck_ms type", got)
        got = cl.call({"op": "health", "tenant": "acme"})
        c.eq(got.get("error"), "bad_request", "a key health does not take", got)
        got = cl.call({"op": "health", "stuck_ms": 0})
        c.eq(got.get("error"), "bad_request", "stuck_ms 0 refused", got)

        d.term()
        r = health(d, "--timeout", "1")
        c.eq(r.returncode, 3, "daemon down: exit 3", r.stdout, r.stderr)
        c.ok("cannot reach" in r.stderr, "says so", r.stderr)


def near_full(c):
    d = Daemon(shards=1, accounts=["acct1"], extra=["--no-dispatch", "--map-size-mb", "16"])
    with d:
        rc, h = health_json(c, d, "--stuck-ms", "600000")
        c.eq(rc, 0, "empty 16 MiB map: healthy", h)
        cl = Client(d.endpoint)
        full = 0
        stored = 0
        i = 0
        while full == 0 and i < 40000:
            reqs = [{"op": "submit", "tenant": "acme", "key": f"fill-{i + k:06d}-" + "k" * 90,
                     "account": "acct1", "vin": fqlib.vin((i + k) % 500),
                     "command": "set_charge_limit", "params": {"percent": 60},
                     "ttl_ms": 3600000} for k in range(500)]
            i += 500
            replies, order = fqlib.pipeline(cl, reqs)
            for q in order:
                r = replies[q]
                if r.get("ok"):
                    stored += 1
                elif r.get("error") == "storage_full":
                    full += 1
        fqlib.log(f"{stored} stored, {full} storage_full")
        c.ok(full > 0, "the map filled up", stored)
        r = health(d, "--stuck-ms", "600000")
        c.eq(r.returncode, 1, "near full: exit 1", r.stdout, r.stderr)
        c.ok("shard 0: storage near full" in r.stdout, "names the shard and the cause", r.stdout)
        rc, h = health_json(c, d, "--stuck-ms", "600000")
        s = h.get("shards", [{}])[0]
        c.eq((s.get("near_full"), s.get("stuck")), (True, False), "near_full, not stuck", s)
        c.ok(s.get("map_used_ratio", 0) > 0.2, "map use ratio high", s)
        c.ok(s.get("map_used_ratio", 0) + s.get("map_reserved_ratio", 0) >
             s.get("map_high_water_ratio", 1), "used + reserved past the high-water mark", s)
        c.eq(s.get("queued"), stored, "every stored command still queued", s)


def silent_shard(c):
    if not shutil.which("mdb_load"):
        fqlib.log("SKIP silent shard: mdb_load not found (Debian package lmdb-utils)")
        return
    d = Daemon(shards=2, accounts=["acct1"], extra=["--no-dispatch"])
    with d:
        cl = Client(d.endpoint)
        env = os.path.join(d.data, "shard-1")
        holder = subprocess.Popen(["mdb_load", env], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        holder.stdin.write(b"VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\n")
        holder.stdin.flush()
        time.sleep(0.3)
        c.ok(holder.poll() is None, "mdb_load holds the write transaction")
        # Submits to both shards: shard 1's batch blocks on the lock.
        n = 20
        for i in range(n):
            cl.send({"op": "submit", "tenant": "acme", "key": f"silent-{i}", "account": "acct1",
                     "vin": fqlib.vin(i), "command": "door_lock", "req": i})
        time.sleep(0.5)
        t0 = time.monotonic()
        r = health(d, "--stuck-ms", "600000")
        took = time.monotonic() - t0
        c.eq(r.returncode, 1, "a shard that does not answer: exit 1", r.stdout, r.stderr)
        c.ok("shard 1 is stuck: its thread did not answer" in r.stdout, "names shard 1",
             r.stdout)
        c.ok("shard 0 is stuck" not in r.stdout and "shard 0: read ok" in r.stdout,
             "shard 0 answers", r.stdout)
        c.ok(took < 4.5, "health answers in about 2 s despite the blocked shard", took)
        rc, h = health_json(c, d, "--stuck-ms", "600000")
        s1 = (h.get("shards") or [{}, {}])[1]
        c.eq((s1.get("answered"), s1.get("read"), s1.get("stuck"), s1.get("queued")),
             (False, "no_answer", True, None), "shard 1 entry", s1)
        holder.stdin.close()
        holder.wait(10)
        got = []
        while len(got) < n:
            x = cl.recv(10)
            if x is None:
                break
            got.append(x)
        c.eq(len([x for x in got if x.get("ok")]), n, "every submit answered once the lock is free")
        r = health(d, "--stuck-ms", "600000")
        c.eq(r.returncode, 0, "healthy again", r.stdout)


def refresh_failure(c):
    tmp = tempfile.mkdtemp(prefix="fq-health-")
    fqlib._cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    sim = dl.Sim({"accounts": [{"id": "other", "token": "sim-access-2",
                                "refresh_token": "sim-refresh-2"}]}, dir=tmp)
    sim.start()
    d = Daemon(shards=1, extra=["--no-dispatch"])
    with d:
        at = dl.make_jwt("other", ["openid", "offline_access", "vehicle_cmds"], [sim.base],
                         ttl=60)
        fqlib.add_account(d.endpoint, "other", token=at, refresh="not-known-here",
                          base_url=sim.base, client_id="sim-client")

        def accounts():
            rc, h = health_json(c, d)
            return h.get("accounts") or None
        acc = fqlib.wait_for(accounts, 15)
        c.ok(acc, "the refresh failure shows up", d.log_tail())
        r = health(d)
        c.eq(r.returncode, 1, "account with a failed refresh: exit 1", r.stdout)
        c.ok("account other: token refresh failed (auth_error)" in r.stdout,
             "names the account and the code", r.stdout)
        rc, h = health_json(c, d)
        a = (h.get("accounts") or [{}])[0]
        c.eq((a.get("account"), a.get("error")), ("other", "auth_error"), "account entry", a)
        c.ok("login_required" in a.get("reason", ""), "reason given", a)
        out = r.stdout + json.dumps(h)
        for secret in (at, "not-known-here", "sim-refresh-2", "sim-access-2"):
            c.ok(secret not in out, "no token in the health output")
    sim.stop()


def usage(c):
    r = cli("health", "--stuck-ms", "0")
    c.eq(r.returncode, 2, "--stuck-ms 0: usage error", r.stderr)
    r = cli("health", "--stuck-ms=abc")
    c.eq(r.returncode, 2, "--stuck-ms=abc: usage error", r.stderr)
    r = cli("health", "extra")
    c.eq(r.returncode, 2, "positional argument: usage error", r.stderr)
    r = cli("health", "--help")
    c.ok(r.returncode == 0 and "Exit status" in r.stdout and "3" in r.stdout, "--help", r.stdout)
    r = cli("health", "--endpoint", f"tcp://127.0.0.1:{fqlib.free_port()}", "--timeout", "0.5")
    c.eq(r.returncode, 3, "nothing listening: exit 3", r.stderr)


def test(c):
    usage(c)
    healthy_and_stuck(c)
    silent_shard(c)
    near_full(c)
    refresh_failure(c)


run_test("test_health", test)
