"""fleetq export against a real fleetqd, checked by replaying what it wrote.

Three batches of commands are submitted with pauses between them; the
export of the middle batch's time range must hold exactly that batch, in
order of acceptance, with the submitted content (tenant, key, account,
device, command, params, ttl_ms, coalesce) and offsets that follow the
event times.  Replaying the file against the same daemon must give
`dup: true` for every request (the daemon's dedupe compares a digest of
the content, so this proves the content is identical), and against a
fresh daemon must create the same commands.
"""

import datetime
import json
import os
import struct
import subprocess
import time

import msgpack

from lib.fqlib import BIN, Client, Daemon, cli, log, run_test, seeded, vin

REPLAY = os.path.join(BIN, "fleetq-replay")


def read_traffic(path):
    data = open(path, "rb").read()
    magic, ver, flags, hlen, count, origin = struct.unpack(">8sHHIQq", data[:32])
    assert magic == b"FQTRAFIC" and ver == 1 and flags == 0
    off, recs = hlen, []
    for _ in range(count):
        t_us, n = struct.unpack(">QI", data[off:off + 12])
        recs.append((t_us, msgpack.unpackb(data[off + 12:off + 12 + n], raw=False)))
        off += 12 + n
    assert off == len(data)
    return origin, recs


def batch(rng, tag, n):
    """n varied submits: vehicles and sites, params, ttl, coalesce, 2 tenants."""
    out = []
    for i in range(n):
        m = {"op": "submit", "tenant": "acme" if i % 3 else "beta", "key": f"{tag}-{i}",
             "account": f"acct-{i % 2}"}
        kind = rng.randrange(5)
        if kind == 0:
            m.update(site=1000 + i, command="backup", params={"backup_reserve_percent": 20 + i})
        elif kind == 1:
            m.update(vin=vin(i), command="set_temps",
                     params={"driver_temp": 21.5, "passenger_temp": 20})
        elif kind == 2:
            m.update(vin=vin(i), command="set_charge_limit", params={"percent": 60 + i % 40},
                     coalesce=True)
        elif kind == 3:
            m.update(vin=vin(i), command="door_lock", ttl_ms=30000 + i)
        else:
            m.update(site=2000 + i, command="time_of_use_settings",
                     params={"tou_settings": {"tariff_content_v2": {"version": 1,
                                                                    "name": f"t{i}"}}})
        out.append(m)
    return out


def submit_all(cl, reqs, gap):
    ids = []
    for m in reqs:
        r = cl.call(m)
        assert r.get("ok"), r
        ids.append(r["id"])
        time.sleep(gap)
    return ids


def test(c):
    rng = seeded("test_export", 77)
    # Commands stay queued (--no-dispatch) for the two accounts the batches name.
    with Daemon(shards=3, log_level="warn", extra=["--no-dispatch"],
                accounts=["acct-0", "acct-1"]) as d:
        cl = Client(d.endpoint)
        a, b, z = batch(rng, "a", 10), batch(rng, "b", 30), batch(rng, "z", 10)
        submit_all(cl, a, 0.002)
        time.sleep(0.3)
        t_from = int(time.time() * 1000)
        ids_b = submit_all(cl, b, 0.01)
        t_to = int(time.time() * 1000)
        time.sleep(0.3)
        submit_all(cl, z, 0.002)

        path = os.path.join(d.tmp, "b.fqt")
        r = cli("export", "--endpoint", d.endpoint, "--from", t_from, "--to", t_to,
                "--out", path)
        c.eq(r.returncode, 0, "export exits 0", r.stderr)
        c.ok("wrote 30 commands" in r.stderr, "export says what it wrote", r.stderr)
        origin, recs = read_traffic(path)
        got = [m for _, m in recs]
        c.eq([m["key"] for m in got], [m["key"] for m in b],
             "exactly the middle batch, in order of acceptance")
        for want, have in zip(b, got):
            # The export carries the ttl_ms each command was accepted with:
            # the daemon's default (60 s) when the submit gave none.
            want = dict(want, ttl_ms=want.get("ttl_ms", 60000))
            c.eq(have, want, f"content of {want['key']}")

        # Offsets follow the `queued` events' times.
        ats = []
        for i in ids_b:
            g = cl.get(i)
            ats.append(g["command"]["created"])
        c.eq(origin, ats[0], "origin is the first command's time")
        c.eq([t // 1000 for t, _ in recs], [x - ats[0] for x in ats],
             "offsets are the acceptance times, relative to the first")

        # ISO-8601 bounds give the same file.
        iso = lambda ms: datetime.datetime.fromtimestamp(
            ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        path2 = os.path.join(d.tmp, "b2.fqt")
        r = cli("export", "--endpoint", d.endpoint, "--from", iso(t_from), "--to", iso(t_to),
                "--out", path2)
        c.eq(r.returncode, 0, "export with ISO-8601 times", r.stderr)
        c.eq(read_traffic(path2)[1], recs, "ISO-8601 and unix ms bounds agree")
        r = cli("export", "--endpoint", d.endpoint, "--from", t_from, "--to", t_to,
                "--tenant", "beta", "--out", path2)
        c.eq([m["key"] for _, m in read_traffic(path2)[1]],
             [m["key"] for m in b if m["tenant"] == "beta"], "--tenant keeps one tenant")

        # Replay against the same daemon: every request is a duplicate, so
        # the content (digest of account, device, command, params) matches.
        r = subprocess.run([REPLAY, "run", path, "--endpoint", d.endpoint, "--speed", "5",
                            "--json"], capture_output=True, text=True, timeout=60)
        rep = json.loads(r.stdout)
        c.eq((rep["acked"], rep["dup"], rep["errors"]), (30, 30, {}),
             "replay against the source: all acked as duplicates (same content)", r.stderr)

        # Bad arguments.
        for args in (["--from", "yesterday", "--to", t_to], ["--from", t_to, "--to", t_from],
                     ["--to", t_to]):
            r = cli("export", "--endpoint", d.endpoint, "--out", path2, *args)
            c.eq(r.returncode, 2, f"usage error for {args}", r.stderr)
        empty = os.path.join(d.tmp, "empty.fqt")
        r = cli("export", "--endpoint", d.endpoint, "--from", 1000, "--to", 2000, "--out", empty)
        c.eq((r.returncode, len(read_traffic(empty)[1])), (0, 0),
             "an empty range gives a valid empty file", r.stderr)

        exported = open(path, "rb").read()  # d.tmp goes with d

    # Replay against a fresh daemon creates the same commands.
    with Daemon(shards=2, log_level="warn", extra=["--no-dispatch"],
                accounts=["acct-0", "acct-1"]) as d2:
        path = os.path.join(d2.tmp, "b.fqt")
        open(path, "wb").write(exported)
        r = subprocess.run([REPLAY, "run", path, "--endpoint", d2.endpoint, "--speed", "5",
                            "--json"], capture_output=True, text=True, timeout=60)
        rep = json.loads(r.stdout)
        c.eq((rep["acked"], rep["dup"], rep["errors"]), (30, 0, {}),
             "replay against a fresh daemon: 30 new commands", r.stderr)
        cl2 = Client(d2.endpoint)
        for m in b:
            g = cl2.get(tenant=m["tenant"], key=m["key"])
            cmd = g.get("command", {})
            same = all(cmd.get(k) == m[k] for k in ("account", "command"))
            same = same and cmd.get("vin", None) == m.get("vin") and \
                cmd.get("site", None) == m.get("site")
            same = same and (cmd.get("params") or {}) == m.get("params", {})
            c.ok(same, f"{m['key']} recreated with its content", m, cmd)


run_test("test_export", test)
