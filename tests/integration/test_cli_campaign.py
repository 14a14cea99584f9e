"""`fleetq campaign start | get | abort | watch` (issue 16) against a real
fleetqd wired to fleetsim:

* start from a CSV file with --params and --watch: every car executes the
  command (its charge limit set), the watch prints progress and exits 0
  (done, no failures); `get` shows the counts and times; each device
  command has the key <key>/<vin>, the params and the campaign id;
* start from JSON on standard input (one unpaired car), then `watch` by
  tenant + key: exit 1 (done with failures), `get --json` says failed 1;
* a list of 8,000 devices goes in two parts (the 256 KiB body limit),
  scheduled an hour ahead: `get` shows 8,000 scheduled, both parts in;
  `abort` prints 8000 cancelled; `watch` exits 2 (aborted); a second
  abort cancels 0; starting the same file again is a duplicate;
* bad files are refused before anything is sent, exit 2, naming the file
  and line: a bad VIN, a missing account, a device listed twice, broken
  JSON, a missing file; `get` of an unknown campaign: exit 1, not_found;
* --max-failure-ratio: 60 cars without the key, the campaign aborts itself
  and start --watch exits 2 with the auto-abort reason;
* fleetqd frozen while start sends: the part that timed out is sent again
  with the same key and the campaign holds every device once.
"""
import json
import os
import re
import signal
import subprocess
import time

from lib import dispatch as dl

CARS = [dl.vin(300 + i) for i in range(12)]
UNPAIRED = dl.vin(399)
UNPAIRED_MANY = [dl.vin(400 + i) for i in range(60)]
T = "camp"


def fq(w, *args, timeout=90, input_=None):
    return dl.cli(*args, "--endpoint", w.daemon.endpoint, timeout=timeout, input_=input_)


def jsonl(text):
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def write(w, name, text):
    p = os.path.join(w.tmp, name)
    with open(p, "w") as f:
        f.write(text)
    return p


def csv_start_and_watch(c, w):
    path = write(w, "cars.csv", "vin,account\n" + "".join(f"{v},acct1\n" for v in CARS[:10]))
    r = fq(w, "campaign", "start", "--tenant", T, "--key", "flash-csv", "--command",
           "set_charge_limit", "--params", '{"percent": 71}', "--devices", path, "--ttl-ms",
           "60000", "--watch", "--publish", w.daemon.publish, "--timeout", "60")
    c.eq(r.returncode, 0, "start --watch of a CSV: exit 0 (done, no failures)", r.stdout,
         r.stderr)
    m = re.match(r"accepted (\S+) 10 devices (\w+)", r.stdout)
    c.ok(m, "start prints 'accepted <id> 10 devices <state>'", r.stdout)
    lines = r.stdout.splitlines()
    c.ok(len(lines) >= 2 and " done: 10/10 finished (100%), succeeded 10, failed 0" in lines[-1],
         "the watch's last line: done, 10 succeeded", lines[-3:])
    cid = m.group(1) if m else "?"
    g = fq(w, "campaign", "get", "--id", cid, "--json")
    j = jsonl(g.stdout)
    c.ok(g.returncode == 0 and j, "get --id --json", g.returncode, g.stderr)
    j = j[0] if j else {}
    c.eq((j.get("state"), j.get("devices"), j.get("succeeded"), j.get("failed"), j.get("counts")),
         ("done", 10, 10, 0, {"succeeded": 10}), "get: done, 10 succeeded")
    c.ok((j.get("finished_at") or 0) >= (j.get("started_at") or 1) > 0, "get: started/finished",
         j)
    g = fq(w, "campaign", "get", "--tenant", T, "--key", "flash-csv")
    c.ok(g.returncode == 0 and re.search(r"^state\s+done$", g.stdout, re.M)
         and re.search(r"^succeeded\s+10$", g.stdout, re.M)
         and re.search(r"^counts\s+succeeded 10$", g.stdout, re.M),
         "get --tenant --key: a readable table", g.stdout, g.stderr)
    for v in CARS[:10]:
        c.eq([e["command"] for e in w.execs(v)], ["set_charge_limit"], f"car {v} executed it once")
        c.eq(w.sim.vehicle(v)["charge_state"]["charge_limit_soc"], 71, f"car {v}: limit 71")
    d = dl.cli("get", "--endpoint", w.daemon.endpoint, "--tenant", T, "--key",
               f"flash-csv/{CARS[0]}", "--json")
    dj = jsonl(d.stdout)
    dc = dj[0].get("command", {}) if dj else {}
    c.ok(dc.get("state") == "succeeded" and dc.get("params") == {"percent": 71}
         and dc.get("campaign") == cid,
         "the device command is an ordinary command with key <key>/<vin>, --params, campaign id",
         d.stdout, d.stderr)
    # Starting the same file again changes nothing: a duplicate.
    r = fq(w, "campaign", "start", "--tenant", T, "--key", "flash-csv", "--command",
           "set_charge_limit", "--params", '{"percent": 71}', "--devices", path, "--ttl-ms",
           "60000")
    c.ok(r.returncode == 0 and r.stdout.startswith(f"duplicate {cid} 10 devices done"),
         "the same start again: 'duplicate <id> ... done'", r.stdout, r.stderr)
    c.eq(sum(len(w.execs(v)) for v in CARS[:10]), 10, "no car executed twice")
    # The watch of a campaign that is over ends at once with its code.
    r = fq(w, "campaign", "watch", "--id", cid, "--publish", w.daemon.publish, "--json",
           "--timeout", "20")
    j = jsonl(r.stdout)
    c.ok(r.returncode == 0 and j and j[-1].get("state") == "done", "watch of a done campaign: exit 0",
         r.returncode, r.stdout, r.stderr)


def json_stdin_with_a_failure(c, w):
    devs = [{"vin": v} for v in CARS[10:12]] + [{"vin": UNPAIRED.lower(), "account": "acct1"}]
    r = fq(w, "campaign", "start", "--tenant", T, "--key", "json-1", "--command", "door_lock",
           "--devices", "-", "--format", "json", "--account", "acct1", "--json",
           input_=json.dumps(devs, indent=1))
    j = jsonl(r.stdout)
    c.ok(r.returncode == 0 and j and j[-1].get("ok") is True and j[-1].get("devices") == 3,
         "start from JSON on stdin (--format json, --account default): 3 devices", r.stdout,
         r.stderr)
    r = fq(w, "campaign", "watch", "--tenant", T, "--key", "json-1", "--publish",
           w.daemon.publish, "--timeout", "60")
    c.eq(r.returncode, 1, "watch: exit 1 when done with a failure", r.stdout, r.stderr)
    c.ok(r.stdout.strip() and "done" in r.stdout.splitlines()[-1]
         and "failed 1" in r.stdout.splitlines()[-1], "watch's last line says done, failed 1",
         r.stdout)
    g = jsonl(fq(w, "campaign", "get", "--tenant", T, "--key", "json-1", "--json").stdout)
    g = g[0] if g else {}
    c.eq((g.get("state"), g.get("succeeded"), g.get("failed"), g.get("counts")),
         ("done", 2, 1, {"succeeded": 2, "failed": 1}), "get: 2 succeeded, 1 failed")
    c.eq(w.execs(UNPAIRED), [], "the unpaired car executed nothing")


def big_in_parts_abort(c, w):
    n = 8000
    rows = "".join(f"{dl.vin(100000 + i)},acct1\n" for i in range(n))
    path = write(w, "big.csv", "VIN,Account\n" + rows)
    # An absolute time: a relative one (+1h) would differ on the second
    # start below, which fleetqd then refuses as idempotency_mismatch.
    at = int(time.time() * 1000) + 3600 * 1000
    r = fq(w, "campaign", "start", "--tenant", T, "--key", "big-1", "--command", "door_lock",
           "--devices", path, "--not-before", at)
    m = re.match(rf"accepted (\S+) {n} devices scheduled \(2 parts\)", r.stdout)
    c.ok(r.returncode == 0 and m, f"{n} devices: accepted in 2 parts, scheduled", r.stdout,
         r.stderr)
    cid = m.group(1) if m else "?"
    g = jsonl(fq(w, "campaign", "get", "--id", cid, "--json").stdout)
    g = g[0] if g else {}
    c.eq((g.get("state"), g.get("devices"), g.get("parts"), g.get("parts_received"),
          g.get("counts")), ("scheduled", n, 2, 2, {"scheduled": n}),
         "get: every device of both parts is scheduled")
    c.eq(g.get("not_before"), at, "get: not_before")
    r = fq(w, "campaign", "start", "--tenant", T, "--key", "big-1", "--command", "door_lock",
           "--devices", path, "--not-before", at)
    c.ok(r.returncode == 0 and r.stdout.startswith(f"duplicate {cid} {n} devices"),
         "the same file again: duplicate",
         r.returncode, r.stdout, r.stderr)
    r = fq(w, "campaign", "abort", "--tenant", T, "--key", "big-1")
    c.ok(r.returncode == 0 and f"cancelled {n} device command" in r.stdout,
         f"abort prints {n} cancelled", r.stdout, r.stderr)
    r = fq(w, "campaign", "watch", "--id", cid, "--publish", w.daemon.publish, "--timeout", "20")
    c.eq(r.returncode, 2, "watch of an aborted campaign: exit 2", r.stdout, r.stderr)
    c.ok("aborted" in r.stdout and "aborted by request" in r.stdout,
         "watch says aborted, by request", r.stdout)
    g = jsonl(fq(w, "campaign", "get", "--id", cid, "--json").stdout)
    g = g[0] if g else {}
    c.eq((g.get("state"), g.get("counts"), g.get("reason")),
         ("aborted", {"cancelled": n}, "aborted by request"), "get: aborted, all cancelled")
    r = fq(w, "campaign", "abort", "--id", cid, "--json")
    j = jsonl(r.stdout)
    c.ok(r.returncode == 0 and j and j[0].get("cancelled") == 0, "a second abort cancels 0",
         r.stdout, r.stderr)


def auto_abort(c, w):
    """--max-failure-ratio and --rate reach fleetqd: 60 cars without the
    key, 5 a second; the campaign aborts itself after 20 failed, start
    --watch exits 2 with the reason."""
    path = write(w, "unpaired.csv", "site,vin,account\n" + "".join(f",{v},acct1\n"
                                                                   for v in UNPAIRED_MANY))
    r = fq(w, "campaign", "start", "--tenant", T, "--key", "auto", "--command", "door_lock",
           "--devices", path, "--max-failure-ratio", "0.5", "--rate", "5", "--watch",
           "--publish", w.daemon.publish, "--timeout", "60")
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    c.eq(r.returncode, 2, "start --watch of a campaign that aborts itself: exit 2", r.stdout,
         r.stderr)
    c.ok(" aborted: " in last and "auto-abort: " in last and "max_failure_ratio 0.5" in last,
         "the last line: aborted, auto-abort with the ratio", last)
    g = jsonl(fq(w, "campaign", "get", "--tenant", T, "--key", "auto", "--json").stdout)
    g = g[0] if g else {}
    c.ok(g.get("state") == "aborted" and g.get("max_failure_ratio") == 0.5 and g.get("rate") == 5
         and g.get("failed", 0) >= 20 and g.get("counts", {}).get("cancelled", 0) >= 10,
         "get: aborted after >= 20 failures, the rest cancelled; rate and ratio as given", g)


def resend_while_fleetqd_is_stopped(c, w):
    """fleetqd frozen (SIGSTOP) while start sends: the part times out, is
    sent again with the same key, and once fleetqd runs again the campaign
    is complete with every device once."""
    n = 8000
    path = write(w, "resend.csv", "vin,account\n" + "".join(
        f"{dl.vin(200000 + i)},acct1\n" for i in range(n)))
    at = int(time.time() * 1000) + 3600 * 1000
    pid = w.daemon.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        p = subprocess.Popen([os.path.join(dl.BIN, "fleetq"), "campaign", "start",
                              "--endpoint", w.daemon.endpoint, "--tenant", T, "--key", "resend",
                              "--command", "door_lock", "--devices", path, "--not-before",
                              str(at), "--timeout", "0.5"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    out, err = p.communicate(timeout=90)
    c.ok(p.returncode == 0 and re.match(rf"accepted \S+ {n} devices scheduled \(2 parts\)", out),
         "start while fleetqd was stopped: accepted once it runs again", p.returncode, out, err)
    c.ok("part 1 of 2: timeout" in err and "sending it again" in err,
         "the part that timed out was sent again (said on stderr)", err)
    g = jsonl(fq(w, "campaign", "get", "--tenant", T, "--key", "resend", "--json").stdout)
    g = g[0] if g else {}
    c.eq((g.get("devices"), g.get("parts_received"), g.get("counts")),
         (n, 2, {"scheduled": n}), "every device once, both parts")


def bad_files(c, w):
    def start(path, *extra, input_=None):
        return fq(w, "campaign", "start", "--tenant", T, "--key", "bad", "--command",
                  "door_lock", "--devices", path, *extra, input_=input_)

    cases = [
        ("badvin.csv", f"vin,account\n{CARS[0]},acct1\n\n{CARS[1][:16]},acct1\n",
         "badvin.csv:4: bad VIN"),
        ("noacct.csv", f"vin,account\n{CARS[0]},acct1\n{CARS[1]},\n", "noacct.csv:3: missing account"),
        ("dup.csv", f"vin,account\n{CARS[0]},acct1\n{CARS[1]},acct1\n{CARS[0]},acct1\n",
         f"dup.csv:4: duplicate device: VIN {CARS[0]} is already on line 2"),
        ("nocol.csv", f"car,account\n{CARS[0]},acct1\n", "nocol.csv:1: the header line names no"),
        ("broken.json", f'[\n {{"vin": "{CARS[0]}", "account": "acct1"}},\n {{"vin": }}\n]',
         "broken.json:3:"),
        ("badel.json", f'[\n {{"vin": "{CARS[0]}", "account": "acct1"}},\n\n {{"vin": "{CARS[1]}"}}\n]',
         "badel.json:4: missing account"),
    ]
    for name, text, want in cases:
        r = start(write(w, name, text))
        c.ok(r.returncode == 2 and r.stderr.startswith("fleetq campaign start: ") and want in r.stderr,
             f"{name}: exit 2 naming the line ({want})", r.returncode, r.stderr)
    r = start(os.path.join(w.tmp, "missing.csv"))
    c.ok(r.returncode == 2 and "cannot open" in r.stderr, "a missing file: exit 2", r.stderr)
    r = start("-", input_=f"vin\n{CARS[0]}\n")
    c.ok(r.returncode == 2 and "no 'account' column and no --account" in r.stderr,
         "stdin without account column or --account: exit 2", r.stderr)
    g = fq(w, "campaign", "get", "--tenant", T, "--key", "bad")
    c.ok(g.returncode == 1 and g.stderr.startswith("fleetq campaign get: not_found"),
         "nothing of the bad files reached the daemon: get says not_found, exit 1", g.stderr)
    r = fq(w, "campaign", "get", "--tenant", T)
    c.ok(r.returncode == 2 and "--key" in r.stderr, "get without --key: usage error", r.stderr)


def body(c, w):
    bad_files(c, w)
    csv_start_and_watch(c, w)
    json_stdin_with_a_failure(c, w)
    big_in_parts_abort(c, w)
    resend_while_fleetqd_is_stopped(c, w)
    auto_abort(c, w)


dl.run("test_cli_campaign", body,
       vehicles=[dl.default_vehicle(v) for v in CARS]
       + [dl.default_vehicle(v, paired=False) for v in [UNPAIRED] + UNPAIRED_MANY])
