"""Issue 14 point 2 (logs) and point 3 (SIGHUP): fleetqd --log-format json
--log-file FILE writes one JSON object per line (ts RFC 3339 UTC with
milliseconds, level, module, msg, and fields) into a file it creates with
no access for others; renaming the file and sending SIGHUP makes it write
a new file (the old one gets nothing more) while it keeps serving; SIGHUP
reloads the log level from --config; a command that ends failed or
expired gets one line with id, tenant, device, command, state, error and
reason, and a storm of them is cut to at most 20 lines a second per shard
plus a "suppressed" line whose count makes up the rest; no token appears
in any line.

Failures without a simulator: fleetqd without --key fails every vehicle
command at once (config_error), and --no-dispatch with a short ttl_ms
expires them in the queue."""
import json
import os
import re
import signal
import stat
import time

from lib import fqlib
from lib.fqlib import Client, Daemon, run_test

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LIMIT = 20  # lines a second per shard (shard.c ENDLOG_PER_S)


def read_lines(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8").splitlines()


def parse_all(c, path, what):
    """Every line of the file as JSON; a line that does not parse fails."""
    out = []
    for line in read_lines(path):
        try:
            out.append(json.loads(line))
        except ValueError as e:
            c.ok(False, f"{what}: a line is not JSON", line, str(e))
    return out


def ends(objs, state=None):
    return [o for o in objs if o.get("module") == "shard" and o.get("state")
            and (state is None or o["state"] == state)]


def submit_many(cl, n, tag, ttl_ms=None, vins=50):
    reqs = []
    for i in range(n):
        m = {"op": "submit", "tenant": "acme", "key": f"{tag}-{i}", "account": "acct1",
             "vin": fqlib.vin(i % vins), "command": "door_lock"}
        if ttl_ms:
            m["ttl_ms"] = ttl_ms
        reqs.append(m)
    replies, order = fqlib.pipeline(cl, reqs)
    return [replies[q] for q in order if replies[q].get("ok")]


def json_file_and_rotation(c):
    d = Daemon(shards=2, accounts=["acct1"])
    logfile = os.path.join(d.tmp, "fleetqd.log")
    d.extra = ["--log-format", "json", "--log-file", logfile]
    with d:
        cl = Client(d.endpoint)
        # Fails at once: no fleet key to sign with.
        ok = submit_many(cl, 3, "rot-a", vins=3)
        c.eq(len(ok), 3, "three submits accepted")
        c.ok(fqlib.wait_for(lambda: len(ends(parse_all(c, logfile, "wait"), "failed")) >= 3, 10),
             "three failed lines", read_lines(logfile)[-5:])
        objs = parse_all(c, logfile, "json log")
        c.ok(len(objs) >= 5, "the log file holds the daemon's lines", len(objs))
        for o in objs:
            if not (TS.match(o.get("ts", "")) and o.get("level") in ("debug", "info", "warn", "error")
                    and isinstance(o.get("module"), str) and isinstance(o.get("msg"), str)):
                c.ok(False, "a line lacks ts / level / module / msg", o)
                break
        else:
            c.ok(True, "every line has ts (RFC 3339 ms), level, module and msg")
        f = ends(objs, "failed")
        ids = {r["id"] for r in ok}
        c.eq({o["id"] for o in f}, ids, "one failed line per command, by id")
        for o in f[:1]:
            for k in ("id", "tenant", "device", "command", "state", "error", "reason"):
                c.ok(isinstance(o.get(k), str) and o[k], f"failed line has {k}", o)
            c.eq(o.get("tenant"), "acme", "tenant field")
            c.eq(o.get("command"), "door_lock", "command field")
            c.eq(o.get("error"), "config_error", "error field")
            c.ok(o.get("device", "").startswith("v:"), "device field", o)
        mode = stat.S_IMODE(os.stat(logfile).st_mode)
        c.ok(mode & 0o007 == 0 and mode & 0o600 == 0o600, "log file: owner rw, nothing for others",
             oct(mode))
        c.ok(b"fleetqd: ready" in open(d.logpath, "rb").read(),
             "the ready line still goes to stderr")

        # logrotate: rename, then HUP.
        rotated = logfile + ".1"
        os.rename(logfile, rotated)
        before = len(read_lines(rotated))
        d.proc.send_signal(signal.SIGHUP)
        c.ok(fqlib.wait_for(lambda: os.path.exists(logfile), 5), "SIGHUP created a new log file")
        c.ok(fqlib.wait_for(lambda: any("SIGHUP" in o.get("msg", "")
                                        for o in parse_all(c, logfile, "new")), 5),
             "the HUP line is in the new file", read_lines(logfile))
        ok2 = submit_many(cl, 2, "rot-b", vins=2)
        c.eq(len(ok2), 2, "daemon still serves after SIGHUP")
        c.ok(fqlib.wait_for(lambda: len(ends(parse_all(c, logfile, "new"), "failed")) >= 2, 10),
             "the new lines go to the new file", read_lines(logfile))
        c.eq(len(read_lines(rotated)), before, "the renamed file gets nothing more")
        c.ok(d.alive(), "fleetqd is alive after SIGHUP")
        c.eq(cl.ping().get("ok"), True, "ping after SIGHUP")
        # A second rotation works the same way.
        os.rename(logfile, logfile + ".2")
        d.proc.send_signal(signal.SIGHUP)
        c.ok(fqlib.wait_for(lambda: os.path.exists(logfile), 5), "second HUP: new file again")
        data = b"".join(open(p, "rb").read() for p in (logfile, rotated, logfile + ".2"))
        for secret in (b"acct1-opaque-token", b"refresh-not-a-secret"):
            c.ok(secret not in data, f"no token in the log ({secret.decode()})")
        c.eq(d.term(), 0, "SIGTERM still stops it cleanly (exit 0)")


def level_reload(c):
    d = Daemon(shards=1, log_level=None, accounts=["acct1"])
    conf = os.path.join(d.tmp, "fleetqd.json")
    with open(conf, "w") as f:
        json.dump({"log_level": "warn", "log_format": "json"}, f)
    d.config = conf
    with d:
        cl = Client(d.endpoint)
        submit_many(cl, 2, "lvl-a", vins=2)
        time.sleep(0.5)
        objs = [json.loads(x) for x in open(d.logpath).read().splitlines() if x.startswith("{")]
        c.eq(len(ends(objs)), 0, "at warn, failed lines (info) are not written")
        c.ok(not [o for o in objs if o["level"] == "info" and o["msg"] != "fleetqd: ready"],
             "no info line at warn but the ready line", objs)
        with open(conf, "w") as f:
            json.dump({"log_level": "info", "log_format": "json"}, f)
        d.proc.send_signal(signal.SIGHUP)
        c.ok(fqlib.wait_for(lambda: "log level warn -> info" in open(d.logpath).read(), 5),
             "HUP: the level change is logged", d.log_tail(5))
        ok = submit_many(cl, 2, "lvl-b", vins=2)

        def lines():
            return [json.loads(x) for x in open(d.logpath).read().splitlines()
                    if x.startswith("{")]
        c.ok(fqlib.wait_for(lambda: len(ends(lines(), "failed")) >= 2, 10),
             "at info after the reload, failed lines are written", d.log_tail(5))
        c.eq({o["id"] for o in ends(lines())}, {r["id"] for r in ok},
             "only the commands after the reload")
        # A broken file: the level stays, the daemon stays.
        with open(conf, "w") as f:
            f.write('{"log_level": "loud"')
        d.proc.send_signal(signal.SIGHUP)
        c.ok(fqlib.wait_for(lambda: "configuration not reloaded" in open(d.logpath).read(), 5),
             "a broken config is reported", d.log_tail(5))
        c.ok(d.alive() and cl.ping().get("ok"), "alive and serving after a bad reload")
        ok = submit_many(cl, 1, "lvl-c", vins=1)
        c.ok(fqlib.wait_for(lambda: ok[0]["id"] in {o["id"] for o in ends(lines())}, 10),
             "level still info after the bad reload")


def json_stderr(c):
    """Without --log-file, --log-format json makes stderr all JSON once the
    daemon runs, the ready line included (at any level)."""
    d = Daemon(shards=1, log_level="warn", accounts=["acct1"], extra=["--log-format", "json"])
    with d:
        Client(d.endpoint).ping()
        lines = [x for x in open(d.logpath).read().splitlines() if x.strip()]
        bad = []
        for x in lines:
            try:
                json.loads(x)
            except ValueError:
                bad.append(x)
        c.eq(bad, [], "every stderr line is JSON")
        c.ok(any(json.loads(x).get("msg") == "fleetqd: ready" for x in lines if x not in bad),
             "the ready line is a JSON line", lines)


def storm(c):
    """300 commands expire in the queue at once on one shard."""
    d = Daemon(shards=1, accounts=["acct1"], extra=["--no-dispatch", "--log-format", "json"])
    with d:
        cl = Client(d.endpoint)
        n = 300
        ok = submit_many(cl, n, "storm", ttl_ms=300, vins=100)
        c.eq(len(ok), n, "all stored")

        def lines():
            return [json.loads(x) for x in open(d.logpath).read().splitlines()
                    if x.startswith("{")]

        def accounted():
            objs = lines()
            supp = sum(int(o["suppressed"]) for o in objs if "suppressed" in o)
            return len(ends(objs, "expired")) + supp
        c.ok(fqlib.wait_for(lambda: accounted() >= n, 10), "every end is logged or counted",
             accounted())
        objs = lines()
        exp = ends(objs, "expired")
        supp = [o for o in objs if "suppressed" in o]
        c.ok(0 < len(exp) < n, "a storm is cut", len(exp))
        c.ok(len(supp) >= 1, "a 'suppressed' line is written", d.log_tail(5))
        c.eq(len(exp) + sum(int(o["suppressed"]) for o in supp), n,
             "lines + suppressed count = commands that ended")
        # At most LIMIT lines in any one second.
        secs = {}
        for o in exp:
            secs[o["ts"][:19]] = secs.get(o["ts"][:19], 0) + 1
        c.ok(max(secs.values()) <= LIMIT * 2, "at most ~20 lines a second", secs)
        c.ok(all(o.get("shard") == "0" and "suppressed" in o.get("msg", "") for o in supp),
             "the suppressed line names the shard", supp)
        c.ok(len({o["id"] for o in exp}) == len(exp), "no end logged twice")


def text_fields(c):
    d = Daemon(shards=1, accounts=["acct1"])
    with d:
        cl = Client(d.endpoint)
        ok = submit_many(cl, 1, "txt", vins=1)
        want = f"id={ok[0]['id']} tenant=acme device=v:{fqlib.vin(0)} command=door_lock " \
               "state=failed error=config_error reason=\""
        c.ok(fqlib.wait_for(lambda: want in open(d.logpath).read(), 10),
             "text format: key=value fields", want, d.log_tail(5))


def bad_flags(c):
    import subprocess
    exe = os.path.join(fqlib.BIN, "fleetqd")
    p = subprocess.run([exe, "--log-format", "xml"], capture_output=True, text=True, timeout=20)
    c.eq(p.returncode, 2, "--log-format xml: usage error")
    c.ok("log-format" in p.stderr, "names the flag", p.stderr)
    p = subprocess.run([exe, "--log-file", "/nonexistent-dir/fq.log", "--data",
                        "/tmp/fq-nonexistent-data"], capture_output=True, text=True, timeout=20)
    c.eq(p.returncode, 2, "unwritable --log-file refused at start")
    c.ok("/nonexistent-dir/fq.log" in p.stderr, "names the file", p.stderr)


def test(c):
    bad_flags(c)
    text_fields(c)
    json_file_and_rotation(c)
    level_reload(c)
    json_stderr(c)
    storm(c)


run_test("test_logs", test)
