#!/usr/bin/env python3
"""A 100,000-car campaign against fleetsim, next to the same commands as
plain submits (issue 16's benchmark).

    perf/bench_campaign.py [--bin build/bin] [--cars 100000] [--quick]
                           [--out perf/results/campaign.md]

Starts fleetsim (plain HTTP on loopback) with N paired, awake cars in one
account and fleetqd (2 shards, fsync on, --metrics) beside it, then runs
three phases over the same N cars, one command per car in each:

1. a campaign of `set_charge_limit` (cold: each car's first command, with
   its session handshake);
2. the same N commands as plain submits (Python client, `submit_many`,
   1,000 in flight on one connection), sessions warm;
3. the campaign again with a new key, sessions warm.

For each phase: the time to accept (campaign: from the first part sent to
the last part's ack; submits: to the last ack), the time to finish (the
campaign's final progress event; submits: when fleetqd's
fleetq_commands_total has counted all N terminal), and fleetqd's CPU
(utime + stime from /proc/PID/stat) per device command until accepted and
until finished; how many succeeded is reported.  The cars are listed in the
simulator's config rather than made by --gen-vehicles, whose names
(SIMGEN...) hold an I, which no VIN has and fleetqd refuses.  Writes a
Markdown report and prints RESULT lines.  --quick: 10,000 cars."""

import argparse
import os
import platform
import re
import subprocess
import sys
import time
import urllib.request

import benchenv

ROOT = benchenv.ROOT
# The harness reads FQ_SRC and FQ_BIN when imported: --bin is taken first.
benchenv.setup(python_client=True)

from lib import dispatch as dl  # noqa: E402
from lib import fqlib  # noqa: E402

import fleetq_client  # noqa: E402
from fleetq_client import _common as C  # noqa: E402

TENANT = "bench"
ACCOUNT = "acct1"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    """fleetqd's user + system CPU seconds so far."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICK


def terminal_total(metrics_url):
    """Sum of fleetq_commands_total (terminal commands, every state) and
    the succeeded ones."""
    with urllib.request.urlopen(metrics_url, timeout=5) as r:
        text = r.read().decode()
    total = succ = 0
    for m in re.finditer(r'^fleetq_commands_total\{state="(\w+)"\} (\d+)$', text, re.M):
        total += int(m.group(2))
        if m.group(1) == "succeeded":
            succ = int(m.group(2))
    return total, succ


def run_campaign(c, pid, key, cars, percent):
    devices = [{"vin": v, "account": ACCOUNT} for v in cars]
    # The parts as Client.campaign sends them, one at a time and in order,
    # timed one by one.
    bodies = C.campaign_requests(TENANT, key, "set_charge_limit", devices,
                                 params={"percent": percent}, ttl_ms=600000)
    part_s = []
    c0, t0 = cpu_s(pid), time.monotonic()
    for b in bodies:
        tp = time.monotonic()
        r = c.call(b)
        part_s.append(time.monotonic() - tp)
    t_acc, c_acc = time.monotonic() - t0, cpu_s(pid) - c0
    if r.get("devices") != len(cars) or r.get("dup"):
        raise RuntimeError(f"campaign not accepted whole: {r!r}")
    final = None
    w = c.watch_campaign(id=r["id"], quiet=2.0)
    for ev in w:
        final = ev
    w.close()
    t_fin, c_fin = time.monotonic() - t0, cpu_s(pid) - c0
    g = c.campaign_get(id=r["id"])
    if g["state"] != "done":
        raise RuntimeError(f"campaign did not end done: {g!r}")
    span = (g["finished_at"] - g["started_at"]) / 1000.0
    return {"accept_s": t_acc, "finish_s": t_fin, "cpu_acc": c_acc, "cpu_fin": c_fin,
            "succeeded": g["succeeded"], "failed": g["failed"],
            "parts": len(bodies), "daemon_span_s": span, "part_max_s": max(part_s),
            "part_med_s": sorted(part_s)[len(part_s) // 2]}


def run_submits(c, pid, metrics_url, key, cars, percent):
    base, base_ok = terminal_total(metrics_url)
    cmds = [{"tenant": TENANT, "key": f"{key}-{i}", "account": ACCOUNT, "vin": v,
             "command": "set_charge_limit", "params": {"percent": percent}, "ttl_ms": 600000}
            for i, v in enumerate(cars)]
    c0, t0 = cpu_s(pid), time.monotonic()
    out = c.submit_many(cmds, window=1000)
    t_acc, c_acc = time.monotonic() - t0, cpu_s(pid) - c0
    if any(r.get("dup") for r in out):
        raise RuntimeError("a plain submit was a duplicate")
    while True:
        total, ok = terminal_total(metrics_url)
        if total - base >= len(cars):
            break
        if time.monotonic() - t0 > 900:
            raise RuntimeError(f"plain submits: {total - base} of {len(cars)} terminal after 900 s")
        time.sleep(0.05)
    t_fin, c_fin = time.monotonic() - t0, cpu_s(pid) - c0
    return {"accept_s": t_acc, "finish_s": t_fin, "cpu_acc": c_acc, "cpu_fin": c_fin,
            "succeeded": ok - base_ok, "failed": total - base - (ok - base_ok),
            "parts": None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.environ.get("FQ_BIN") or os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--cars", type=int, default=100000)
    ap.add_argument("--quick", action="store_true", help="10,000 cars")
    ap.add_argument("--out", default=os.path.join(ROOT, "perf", "results", "campaign.md"))
    a = ap.parse_args()
    if a.quick:
        a.cars = 10000
    cars = [fqlib.vin(i, prefix="5YJ3E7EB") for i in range(a.cars)]
    t_setup = time.monotonic()
    # fleetqd's own defaults (10 s HTTP timeout, 1 s retry backoff), not the
    # tests' short ones, which a loaded machine turns into retries.
    w = dl.World("bench_campaign", vehicles=[dl.default_vehicle(v) for v in cars], tap=False,
                 shards=2, start=False,
                 daemon_opts={"--http-timeout-ms": None, "--retry-backoff-ms": None,
                              "--wake-poll-ms": None})
    mport = fqlib.free_port()
    w.daemon.log_level = "warn"
    w.daemon.extra += ["--metrics", f"127.0.0.1:{mport}"]
    metrics_url = f"http://127.0.0.1:{mport}/metrics"
    results = []
    try:
        w.start()
        setup_s = time.monotonic() - t_setup
        pid = w.daemon.proc.pid
        print(f"bench_campaign: fleetsim with {a.cars} cars + fleetqd up in {setup_s:.1f} s",
              file=sys.stderr, flush=True)
        # A part is acked once its ~6,500 device commands are durable, while
        # the parts before it are being dispatched: allow for a busy machine.
        with fleetq_client.Client(w.daemon.endpoint, publish=w.daemon.publish, timeout=120,
                                  retries=3) as c:
            version = c.ping()["version"]
            for name, fn in (
                    ("campaign, cold (first command per car: session handshakes)",
                     lambda: run_campaign(c, pid, "camp-cold", cars, 61)),
                    ("plain submits (submit_many, 1,000 in flight), warm",
                     lambda: run_submits(c, pid, metrics_url, "plain", cars, 62)),
                    ("campaign, warm", lambda: run_campaign(c, pid, "camp-warm", cars, 63))):
                r = fn()
                r["name"] = name
                results.append(r)
                print(f"bench_campaign: {name}: accepted in {r['accept_s']:.2f} s, finished in "
                      f"{r['finish_s']:.2f} s, fleetqd CPU {r['cpu_fin'] / a.cars * 1e6:.1f} us "
                      f"per device command ({r['cpu_acc'] / a.cars * 1e6:.1f} to accept)",
                      file=sys.stderr, flush=True)
    finally:
        w.close()

    cpu, git = benchenv.machine()
    load = os.getloadavg()[0]
    run = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu} x {os.cpu_count()} "
           f"(load {load:.1f}); fleetq {git} ({version}); Python {platform.python_version()}")
    n = a.cars
    L = [f"# Campaign of {n:,} cars against fleetsim", "",
         f"`perf/bench_campaign.py{' --quick' if a.quick else ''}`: fleetsim (plain HTTP, "
         f"loopback) with {n:,} paired, awake cars in one account, listed in its config; fleetqd "
         "with 2 shards, fsync on; the Python client on one connection. One `set_charge_limit` "
         "per car in each phase (the table says how many succeeded). Accept: a campaign's parts sent in "
         "order until the last one is acked (every device command durable); plain submits until "
         "the last ack. Finish: the campaign's final progress event; for plain submits, when "
         "fleetqd's `fleetq_commands_total` counted all of them terminal (polled every 50 ms). "
         "CPU: fleetqd's utime + stime over the phase, per device command. All processes share "
         "this machine's CPUs, so the figures move by 10-30 % between runs.", "",
         "| phase | devices | succeeded / not | parts | accepted in s | finished in s | device "
         "commands/s (finish) | fleetqd CPU us/cmd to accept | fleetqd CPU us/cmd to finish |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        L.append(f"| {r['name']} | {n:,} | {r['succeeded']:,} / {r['failed']:,} | "
                 f"{r['parts'] or '-'} | {r['accept_s']:.2f} | "
                 f"{r['finish_s']:.2f} | {n / r['finish_s']:,.0f} | "
                 f"{r['cpu_acc'] / n * 1e6:.1f} | {r['cpu_fin'] / n * 1e6:.1f} |")
    L += ["", "Campaign parts (each acked once its device commands are durable): " +
          "; ".join(f"{r['name'].split(' (')[0]}: {r['parts']} parts, ack median "
                    f"{r['part_med_s']:.2f} s, slowest {r['part_max_s']:.2f} s, campaign "
                    f"started_at to finished_at {r['daemon_span_s']:.2f} s"
                    for r in results if r.get("parts")) + "."]
    plain, warm = results[1], results[2]
    L += ["", f"Campaign (warm) against plain submits: accept {warm['accept_s']:.2f} s vs "
          f"{plain['accept_s']:.2f} s, finish {warm['finish_s']:.2f} s vs {plain['finish_s']:.2f} s, "
          f"fleetqd CPU {warm['cpu_fin'] / n * 1e6:.1f} vs {plain['cpu_fin'] / n * 1e6:.1f} us per "
          "device command.", "", f"Run: {run}. Setup (simulator with the cars, daemon, account): "
          f"{setup_s:.1f} s."]
    for r in results:
        key = "campaign-cold" if "cold" in r["name"] else "campaign-warm" if "campaign" in r["name"] else "submits-warm"
        print(f"RESULT phase={key} devices={n} accept_s={r['accept_s']:.2f} "
              f"finish_s={r['finish_s']:.2f} fleetqd_cpu_us_per_cmd={r['cpu_fin'] / n * 1e6:.1f}")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(L) + "\n")
    print(f"bench_campaign: wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
