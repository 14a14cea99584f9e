#!/usr/bin/python3
"""The `fleetq` CLI against a real daemon: send (with --param / --params,
dup, --wait), get, cancel, history, watch --count, ping; --json output is
parseable; exit codes: 0 ok, 1 the daemon refused or did not answer, 2
usage error; a refusal is reported as "fleetq <command>: <error code>: ..."."""

import os
import re
import signal
import subprocess
import time

from lib import fqlib
from lib.fqlib import Client, Daemon, cli, free_port, json_lines, pipeline, vin


def connected_to(pid, port):
    """Whether process pid holds an established TCP connection to port
    (read from /proc: the sockets among its fds, matched in net/tcp*)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            p = row.split()
            if p[9] in inodes and p[3] == "01" and int(p[2].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def main(c):
    # Commands stay queued (nothing is sent) for the accounts these tests
    # name, which fleetqd must have: it refuses others (unknown_account).
    with Daemon(shards=2, extra=["--no-dispatch"], accounts=["a", "acct"]) as d:
        ep = ["--endpoint", d.endpoint]

        # help and usage
        r = cli("--help")
        c.ok(r.returncode == 0 and "send" in r.stdout and "watch" in r.stdout, "--help", r)
        r = cli("help", "get")
        c.ok(r.returncode == 0 and "usage: fleetq get" in r.stdout, "help get", r)
        r = cli("send", "--help")
        c.ok(r.returncode == 0 and "--wait" in r.stdout, "send --help", r)
        r = cli("frobnicate")
        c.ok(r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr, "unknown command", r)
        r = cli()
        c.eq(r.returncode, 2, "no command: usage, exit 2")
        r = cli("get", "--bogus", *ep)
        c.eq(r.returncode, 2, "unknown option: exit 2")
        r = cli("send", "--tenant", "t", *ep)
        c.ok(r.returncode == 2 and "required" in r.stderr, "send without --key: exit 2", r)
        r = cli("send", "--tenant", "t", "--key", "k", "--account", "a", "--command", "door_lock",
                "--vin", vin(1), "--site", "4", *ep)
        c.ok(r.returncode == 2 and "exactly one" in r.stderr, "--vin and --site: exit 2", r)
        r = cli("get", "--id", "x", "--tenant", "t", *ep)
        c.eq(r.returncode, 2, "get --id with --tenant: exit 2")
        r = cli("watch", "--device", vin(1), "--publish", d.publish)
        c.eq(r.returncode, 2, "watch --device without --tenant: exit 2")
        r = cli("history", "--after", "3", *ep)
        c.eq(r.returncode, 2, "history without --shard: exit 2")
        r = cli("send", "--param", "noequals", "--tenant", "t", *ep)
        c.eq(r.returncode, 2, "--param without '=': exit 2")

        # ping
        r = cli("ping", *ep)
        c.ok(r.returncode == 0 and "shards 2" in r.stdout, "ping", r)
        r = cli("ping", "--json", *ep)
        j = json_lines(r.stdout)
        c.ok(r.returncode == 0 and j and j[0].get("ok") is True and j[0].get("shards") == 2,
             "ping --json", r)
        r = cli("ping", "--endpoint", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.5")
        c.ok(r.returncode == 1 and r.stderr.startswith("fleetq ping: timeout:"),
             "ping with no daemon: fleetq ping: timeout, exit 1", r)

        # send / dup / params
        base = ["--tenant", "cli", "--account", "acct", "--vin", vin(3)]
        r = cli("send", *base, "--key", "c1", "--command", "set_charge_limit",
                "--param", "percent=80", *ep)
        m = re.match(r"accepted (\S+) queued$", r.stdout.strip())
        c.ok(r.returncode == 0 and m, "send: accepted <id> queued", r)
        cid = m.group(1) if m else "?"
        r = cli("send", *base, "--key", "c1", "--command", "set_charge_limit",
                "--param", "percent=80", *ep)
        c.eq((r.returncode, r.stdout.strip()), (0, f"duplicate {cid} queued"), "send dup")
        r = cli("send", *base, "--key", "c1", "--command", "set_charge_limit",
                "--param", "percent=81", *ep)
        c.ok(r.returncode == 1 and r.stderr.startswith("fleetq send: idempotency_mismatch: "),
             "send with other content: idempotency_mismatch, exit 1", r)
        r = cli("send", *base, "--key", "c2", "--command", "set_charge_limit",
                "--param", "percent=120", *ep)
        c.ok(r.returncode == 1 and r.stderr.startswith("fleetq send: bad_param: ")
             and "percent" in r.stderr, "out-of-range param: fleetq send: bad_param, exit 1", r)
        r = cli("send", "--tenant", "cli", "--account", "never-added", "--vin", vin(3), "--key",
                "c6", "--command", "door_lock", *ep)
        c.ok(r.returncode == 1 and r.stderr.startswith("fleetq send: unknown_account: ")
             and "fleetq account add" in r.stderr, "unknown account: fleetq send: unknown_account, exit 1",
             r)
        r = cli("send", *base, "--key", "c3", "--command", "teleport", *ep)
        c.ok(r.returncode == 1 and r.stderr.startswith("fleetq send: unknown_command: "),
             "unknown command: exit 1", r)
        r = cli("send", *base, "--key", "c4", "--command", "set_temps", "--json",
                "--params", '{"driver_temp": 21.5, "passenger_temp": 20}',
                "--param", "passenger_temp=22.5", *ep)
        j = json_lines(r.stdout)
        c.ok(r.returncode == 0 and len(j) == 1 and j[0].get("ok") is True
             and j[0].get("dup") is False and j[0].get("state") == "queued", "send --json", r)
        tid = j[0].get("id") if j else "?"
        r = cli("get", "--id", tid, "--json", *ep)
        j = json_lines(r.stdout)
        c.eq(j[0].get("command", {}).get("params") if j else None,
             {"driver_temp": 21.5, "passenger_temp": 22.5}, "--params JSON merged with --param")
        r = cli("send", "--tenant", "cli", "--account", "acct", "--site", "42", "--key", "s1",
                "--command", "backup", "--params", '{"backup_reserve_percent": 30}', *ep)
        c.ok(r.returncode == 0 and r.stdout.startswith("accepted "), "send to a site", r)
        r = cli("send", *base, "--key", "c5", "--command", "set_temps", "--params", "[1]", *ep)
        c.eq(r.returncode, 2, "--params that is not an object: exit 2")

        # get
        r = cli("get", "--id", cid, *ep)
        c.ok(r.returncode == 0 and re.search(r"^state\s+queued$", r.stdout, re.M)
             and "transitions:" in r.stdout and "set_charge_limit" in r.stdout, "get (text)", r)
        r = cli("get", "--tenant", "cli", "--key", "c1", "--json", *ep)
        j = json_lines(r.stdout)
        c.ok(r.returncode == 0 and j and j[0]["command"]["id"] == cid
             and j[0]["command"]["params"] == {"percent": 80}, "get --json by tenant+key", r)
        r = cli("get", "--id", "ffffffffffffffff", *ep)
        c.ok(r.returncode == 1 and r.stderr.startswith("fleetq get: not_found: "), "get unknown", r)

        # cancel
        r = cli("cancel", "--id", cid, *ep)
        c.eq((r.returncode, r.stdout.strip()), (0, f"cancelled {cid}"), "cancel")
        r = cli("cancel", "--id", cid, *ep)
        c.ok(r.returncode == 1 and r.stderr.startswith("fleetq cancel: not_cancellable: ")
             and "(state: cancelled)" in r.stderr, "cancel again: not_cancellable", r)
        r = cli("get", "--id", cid, *ep)
        c.ok(re.search(r"queued\s+->\s+cancelled", r.stdout), "get shows queued -> cancelled", r)

        # history
        shard = json_lines(cli("get", "--id", cid, "--json", *ep).stdout)[0]["command"].get("shard", 0)
        r = cli("history", "--shard", shard, "--json", *ep)
        j = json_lines(r.stdout)
        evs = j[0].get("events", []) if j else []
        c.ok(r.returncode == 0 and any(e["id"] == cid and e["state"] == "cancelled" for e in evs),
             "history --json has the cancelled event", r)
        r = cli("history", "--shard", shard, "--after", "0", "--limit", "2", *ep)
        lines = r.stdout.strip().splitlines()
        c.ok(r.returncode == 0 and len(lines) == 3 and re.match(r"next \d+$", lines[-1]),
             "history (text): 2 events + next", r)
        r = cli("history", "--shard", "0", "--limit", "1001", *ep)
        c.ok(r.returncode in (1, 2), "history --limit 1001 refused", r)

        # watch --count with events produced meanwhile
        w = subprocess.Popen([fqlib.BIN + "/fleetq", "watch", "--tenant", "wt", "--count", "3",
                              "--json", "--timeout", "20", "--publish", d.publish],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Connected to the publisher (not a fixed time: a loaded machine
        # running the sanitizer build can take longer), then a moment for
        # the subscription to reach it.
        c.ok(fqlib.wait_for(lambda: connected_to(w.pid, d.pub_port), timeout=60, step=0.01),
             "watch --count connected to the publisher")
        time.sleep(0.3)
        sent = []
        for i in range(3):
            r = cli("send", "--tenant", "wt", "--account", "a", "--vin", vin(9), "--key",
                    f"w{i}", "--command", "flash_lights", "--json", *ep)
            sent += [x.get("id") for x in json_lines(r.stdout)]
        cli("send", "--tenant", "other", "--account", "a", "--vin", vin(9), "--key", "w9",
            "--command", "flash_lights", *ep)
        out, err = w.communicate(timeout=30)
        j = json_lines(out)
        c.eq((w.returncode, [e.get("id") for e in j]), (0, sent), "watch --count 3 --json", )
        c.ok(all(e.get("state") == "queued" and e.get("tenant") == "wt" for e in j),
             "watch filtered by tenant", j)
        r = cli("watch", "--tenant", "nobody", "--count", "1", "--timeout", "0.5",
                "--publish", d.publish)
        c.ok(r.returncode == 1 and "timeout" in r.stderr, "watch timeout before count: exit 1", r)
        w = subprocess.Popen([fqlib.BIN + "/fleetq", "watch", "--tenant", "wt", "--device",
                              vin(9), "--count", "1", "--timeout", "20", "--publish", d.publish],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        c.ok(fqlib.wait_for(lambda: connected_to(w.pid, d.pub_port), timeout=60, step=0.01),
             "watch --device connected to the publisher")
        time.sleep(0.3)
        cli("cancel", "--tenant", "wt", "--key", "w0", *ep)
        out, err = w.communicate(timeout=30)
        c.ok(w.returncode == 0 and re.search(rf"wt/{vin(9)} flash_lights queued -> cancelled", out),
             "watch (text): tenant/device command prev -> state", out, err)

        # send --wait: follows to the terminal state; exit 0 only for succeeded
        t0 = time.monotonic()
        r = cli("send", "--tenant", "wait", "--account", "a", "--vin", vin(11), "--key", "x1",
                "--command", "honk_horn", "--ttl-ms", "300", "--wait", "--timeout", "10",
                "--publish", d.publish, *ep)
        c.ok(r.returncode == 1 and "-> expired" in r.stdout, "send --wait: expired, exit 1", r)
        c.ok(time.monotonic() - t0 < 8, "send --wait returned soon after expiry")
        wp = subprocess.Popen([fqlib.BIN + "/fleetq", "send", "--tenant", "wait", "--account",
                               "a", "--vin", vin(12), "--key", "x2", "--command", "honk_horn",
                               "--wait", "--json", "--timeout", "20", "--publish", d.publish,
                               *ep], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Cancelled once it is stored (send --wait subscribes first, then
        # submits): not after a fixed time, which a loaded machine outran.
        c.ok(fqlib.wait_for(lambda: cli("get", "--tenant", "wait", "--key", "x2", *ep)
                            .returncode == 0, timeout=60, step=0.05),
             "send --wait stored its command")
        cli("cancel", "--tenant", "wait", "--key", "x2", *ep)
        out, err = wp.communicate(timeout=30)
        j = json_lines(out)
        c.ok(wp.returncode == 1 and j and j[-1].get("state") == "cancelled",
             "send --wait then cancel elsewhere: cancelled, exit 1", out, err)
        # an already terminal duplicate returns at once
        r = cli("send", "--tenant", "wait", "--account", "a", "--vin", vin(12), "--key", "x2",
                "--command", "honk_horn", "--wait", "--publish", d.publish, *ep)
        c.ok(r.returncode == 1 and "duplicate" in r.stdout and "cancelled" in r.stdout,
             "send --wait on a terminal duplicate", r)


    # watch --fill: a stopped watcher on a daemon with a tiny publisher HWM
    # loses events; once resumed, the seq jumps are filled from history.
    with Daemon(shards=2, extra=["--pub-hwm", "20", "--no-dispatch"], accounts=["a", "acct1"]) as d:
        n = 20000
        w = subprocess.Popen([fqlib.BIN + "/fleetq", "watch", "--tenant", "gx", "--fill", "--json",
                              "--count", str(n + 21), "--timeout", "110", "--publish", d.publish,
                              "--endpoint", d.endpoint],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The watch prints what is published after it took its start
        # points, which it does before it connects to the publisher: wait
        # for that connection, not for a fixed time (a loaded machine
        # running the sanitizer build took longer than 1 s to get there,
        # and "first" then went before the watch began).  Its subscription
        # may still be on its way: --fill must recover what that misses.
        c.ok(fqlib.wait_for(lambda: connected_to(w.pid, d.pub_port), timeout=60, step=0.01),
             "watch --fill connected to the publisher")
        cl = Client(d.endpoint)
        # Long deadlines: under sanitizers this scenario can outlast the
        # default 60 s, and an `expired` event would be a second event for
        # the same command.
        cl.submit("gx", "first", vin_=vin(1), ttl_ms=3600000)
        time.sleep(0.3)
        w.send_signal(signal.SIGSTOP)
        reqs = [{"op": "submit", "tenant": "gx", "key": f"g{i}", "account": "a",
                 "vin": vin(i % 20), "command": "door_lock", "ttl_ms": 3600000}
                for i in range(n)]
        reps, _ = pipeline(cl, reqs, window=500, timeout=120)
        w.send_signal(signal.SIGCONT)
        time.sleep(2.0)
        # one more event per device reveals losses at the tail of each shard
        for i in range(20):
            cl.submit("gx", f"sentinel-{i}", vin_=vin(i), ttl_ms=3600000)
        out, err = w.communicate(timeout=120)
        j = json_lines(out)
        ids = {e.get("id") for e in j}
        want = {r.get("id") for r in reps.values()}
        c.eq((w.returncode, len(j), len(ids)), (0, n + 21, n + 21),
             "watch --fill: every event exactly once", err[-300:])
        c.ok(want <= ids, "watch --fill: every flooded command's event printed")
        c.ok("recovered" in err, "watch --fill said it recovered events", err[:200])
        cl.close()


fqlib.run_test("cli", main)
